"""A Python data layer for the sharding tests: batches of consecutive integers (param_str: the
batch size), as a sequential reader of any dataset would give them."""
import numpy as np

import brewnet as caffe


class CountingData(caffe.Layer):
    def setup(self, bottom, top):
        self.batch = int(self.param_str)
        self.next = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.batch)

    def forward(self, bottom, top):
        top[0].data[...] = np.arange(self.next, self.next + self.batch)
        self.next += self.batch

    def backward(self, top, propagate_down, bottom):
        pass
