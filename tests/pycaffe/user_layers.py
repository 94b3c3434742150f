"""Python layers for tests/pycaffe, in the style pycaffe users write them; nets name this module
in ``python_param { module: "pycaffe.user_layers" }``."""
import brewnet as caffe


class Multiply(caffe.Layer):
    """top = k * bottom, k read from param_str."""

    def setup(self, bottom, top):
        try:
            self.k = float(self.param_str)
        except ValueError:
            raise ValueError(f"Multiply: param_str must be a number, not {self.param_str!r}") from None

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.k * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = self.k * top[0].diff

    def set_factor(self, k: float) -> None:
        """A method of the user's own, called through net.layers[i]."""
        self.k = float(k)


class RefusesSetup(caffe.Layer):
    """A layer whose setup fails, as a layer does when its prototxt is wrong."""

    def setup(self, bottom, top):
        raise RuntimeError("RefusesSetup: this layer never sets up")


class CountsBackwards(caffe.Layer):
    """Passes nothing on; its one learnable blob starts at 0 and each backward sets its diff
    to 1, so the tests can see the blob being stored, restored and shared."""

    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[0] = 0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] = 1


class Phase(caffe.Layer):
    """One scalar top: the phase the net was built in (pycaffe's ``self.phase``)."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = self.phase
