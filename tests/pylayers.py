"""Python layers used by the tests, written the way pycaffe users write them."""

import brewnet as caffe


class ScaledSquare(caffe.Layer):
    """top = k * bottom**2, with k from param_str (default 1)."""

    def setup(self, bottom, top):
        if len(bottom) != 1:
            raise Exception("ScaledSquare takes one bottom")
        self.k = float(self.param_str or 1.0)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.k * bottom[0].data ** 2

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * self.k * bottom[0].data * top[0].diff


class SumTwo(caffe.Layer):
    """top = a + b (two bottoms), checking that shapes agree in reshape."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        if bottom[0].data.shape != bottom[1].data.shape:
            raise Exception("SumTwo needs equal shapes")
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + bottom[1].data

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if propagate_down[i]:
                bottom[i].diff[...] = top[0].diff


class LearnedScale(caffe.Layer):
    """top = w * bottom with one learnable scalar blob w (pycaffe's self.blobs)."""

    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = float(self.param_str or 1.0)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data[0] * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] += (top[0].diff * bottom[0].data).sum()
        if propagate_down[0]:
            bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff
