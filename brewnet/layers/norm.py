"""BatchNorm, in both dialects, chosen by what the prototxt says.

BVLC dialect (no NVCaffe-only fields): blobs [mean accumulator (C), variance accumulator (C),
factor s (1)], all zero at start; no scale or bias (a ``Scale`` layer follows).  In TRAIN it
normalises with the batch mean and *biased* batch variance over N·H·W and then updates
``s = maf·s + 1``, ``mean_acc = mean_b + maf·mean_acc``, ``var_acc = m/(m−1)·var_b + maf·var_acc``
(m = N·H·W; factor 1 when m ≤ 1).  Global statistics are ``mean_acc / s``, ``var_acc / s`` (both 0
when s = 0), so the stored values are *unnormalised* running sums.

NVCaffe dialect (``scale_bias``, ``scale_filler``, ``bias_filler`` or ``engine`` present): blobs
[mean (C), variance (C), correction (1) = 1] and, with scale/bias, [scale (C), bias (C)] after
them (NVCaffe 0.16/0.17 order).  Statistics are *normalised* running averages, correction
stays 1, as NVCaffe stores them.  NVCaffe's update ``mean = maf·mean + (1−maf)·mean_b`` starts
from zero and is biased towards it early in training (after 1500 iterations at maf .999 its
statistics are 22% short, which cost the seed's NVCaffe networks a point of TEST accuracy).
brewnet keeps the same average without the bias: with the weight s = maf·s + 1 (s = 0 at the
start), ``mean += (mean_b − mean) / s``, exactly the BVLC dialect's sums / s.  s is not a Caffe
blob: a layer loaded from a file takes s = 1/(1−maf), a converged average, from which the update
is NVCaffe's own; a solver resuming from a snapshot of iteration N sets s to the weight of the
N·iter_size batches it has seen (see resume_average), so resuming continues the same average.
γ starts at 1 and β at 0 unless the user's filler says otherwise (NVCaffe 0.14 defaulted γ to 0,
which is why those networks never trained).

A 4- or 2-block ``param`` list in the NVCaffe dialect is NVCaffe 0.14/0.15 syntax (scale, bias
first, then statistics), which always had scale/bias: such a layer gets them too.

Loading (``load_caffe_blobs``) accepts every layout in :mod:`brewnet.formats.batchnorm_layouts` (BVLC
3-blob, NVCaffe 0.14 cuDNN, 0.15 CAFFE/cuDNN, 0.16/0.17) and says in a note what it found and how
it mapped it.  Scale and bias the prototxt leaves implicit (NVCaffe 0.14 cuDNN and 0.15 files into
``batch_norm_param { engine: CUDNN }`` or no batch_norm_param; any NVCaffe file with scale/bias
into a layer that sets ``engine``; see :func:`brewnet.formats.batchnorm_layouts.implicit_scale_bias`) are
taken from the file: the layer becomes what ``scale_bias: true`` gives — NVCaffe dialect, blobs
[mean, var, correction, scale, bias], scale and bias learnable (param blocks as for
``scale_bias``), applied in every phase — and records ``scale_bias: true`` in its own
LayerParameter, so ``net.save`` writes NVCaffe 0.16/0.17's layout with a definition that says so,
which the same prototxt loads back.  (The loader then registers the new blobs with the net, as
parameters a solver trains: ``Net.register_loaded_blobs``.)  Otherwise a layer
without scale/bias cannot hold a file's non-identity ones (an NVCaffe 0.16/0.17 file into a
field-less, BVLC-dialect prototxt, whose Scale layer holds γ/β; or a one-channel file whose
layout cannot be told): that is an error that says to declare ``scale_bias: true`` or convert
the model (``brewnet convert -to bvlc``).

Either way ``use_global_stats`` defaults to ``phase == TEST`` and an explicit value wins; the
statistics are buffers, never optimiser parameters; in-place use is as correct as out-of-place
(autograd never sees a value overwritten).  Works on any input rank ≥ 2 (channels = axis 1).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..formats.batchnorm_layouts import (LAYOUT_BLOBS, declares_scale_bias, detect, implicit_scale_bias,
                                         nvcaffe_dialect)
from ..proto import caffe_pb2
from .base import Layer, register

log = logging.getLogger("brewnet")


@register("BatchNorm")
class BatchNorm(Layer):
    accepts_extra_param_specs = True

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) < 2:
            self.fail(f"needs a bottom with at least 2 axes (channels = axis 1), got {shape}")
        p = self.param.batch_norm_param
        c = shape[1]
        self.nvcaffe = nvcaffe_dialect(self.param)
        self.scale_bias = declares_scale_bias(self.param)
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else not self.training_phase
        self.maf = float(p.moving_average_fraction)
        if not self.blob_names:
            self.eps = float(p.eps)
            self.update_statistics = True  # doctor turns this off to measure batch statistics
            #: data-parallel training: reduce the batch statistics over every process (set by
            #: the solver for its train net, see brewnet.solver.distributed); False: this rank's
            self.sync_statistics = False
            self._batch_stats: list[torch.Tensor] | None = None  # scratch of _forward_updating
            self.loaded_layout: str | None = None
            #: why the layer took scale/bias its prototxt left implicit from a file (None: it did not)
            self.implicit_scale_bias: str | None = None
            self.add_blob("running_mean", torch.zeros(c), learnable=False)
            self.add_blob("running_var", torch.zeros(c), learnable=False)
            self.add_blob("factor", torch.zeros(1) if not self.nvcaffe else torch.ones(1), learnable=False)
            if self.scale_bias:
                self.add_blob("weight", self.fill(p.scale_filler if p.HasField("scale_filler") else None, (c,),
                                                  default_value=1.0))
                self.add_blob("bias", self.fill(p.bias_filler if p.HasField("bias_filler") else None, (c,)))
            self._warn_about_param_specs()
            #: NVCaffe dialect: the weight s of the running averages (see the module docstring)
            self.weight_sum = 0.0
            if not self.nvcaffe:
                # Caffe's BatchNormLayer::LayerSetUp masks the statistics with lr_mult 0 specs in
                # its layer parameter, so the caffemodels it writes carry them: do the same.
                while len(self.param.param) < 3:
                    self.param.param.add(lr_mult=0)
        elif self.running_mean.shape[0] != c:
            self.fail(f"bottom has {c} channels, the layer was set up for {self.running_mean.shape[0]}")
        return [shape]

    # ----- ParamSpec mapping -------------------------------------------------------------
    def _stat_and_affine_specs(self):
        """Split the user's param blocks into (statistics specs, [scale spec, bias spec])."""
        specs = list(self.param.param)
        if not self.nvcaffe or not specs:
            return specs, []
        if len(specs) in (2, 4):  # NVCaffe 0.14/0.15 syntax: scale, bias first, then statistics
            return specs[2:], specs[:2]
        return specs[:3], specs[3:5]  # NVCaffe 0.16/0.17 order: mean, var, correction, scale, bias

    def param_spec(self, index: int):
        stats, affine = self._stat_and_affine_specs()
        if index >= 3:
            k = index - 3
            return affine[k] if k < len(affine) else caffe_pb2.ParamSpec(lr_mult=1, decay_mult=1)
        return caffe_pb2.ParamSpec(lr_mult=0, decay_mult=0)

    def _warn_about_param_specs(self) -> None:
        stats, _ = self._stat_and_affine_specs()
        # decay_mult alone does nothing (Caffe's update is lr·lr_mult·(g + wd·decay_mult·w)), and
        # Caffe itself writes `param { lr_mult: 0 }` with decay_mult 1: only lr_mult != 0 matters.
        bad = [s for s in stats if s.lr_mult != 0]
        if bad:
            log.warning("layer '%s' (BatchNorm): param blocks give lr_mult/decay_mult to the statistics; "
                        "brewnet never lets the solver or weight decay touch them (ignored; set them to 0 "
                        "or remove those param blocks)", self.name)

    # ----- forward -----------------------------------------------------------------------
    def _global_stats(self):
        s = self.factor[0]
        inv = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
        return self.running_mean * inv, self.running_var * inv

    def forward(self, x, affine: tuple | None = None):
        """``affine`` = (γ, β) of the Scale layer that follows, when the net fuses the pair."""
        c = x.shape[1]
        if affine is not None:
            weight, bias = affine
            if self.scale_bias:
                # scale/bias taken from a file after the net paired this layer with the Scale
                # that follows: s·(γ·x̂ + β) + t = (s·γ)·x̂ + (s·β + t)
                bias = weight * self.bias if bias is None else torch.addcmul(bias, weight, self.bias)
                weight = weight * self.weight
        else:
            weight = self.weight if self.scale_bias else None
            bias = self.bias if self.scale_bias else None
        if self.use_global_stats:
            mean, var = self._global_stats()
            # statistics in the input's dtype, or float32 for a half-precision input (autocast:
            # PyTorch's mixed batch norm takes float32 statistics and parameters)
            sd = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
            return F.batch_norm(x, mean.to(sd), var.to(sd), weight, bias, False, 0.0, self.eps)
        if self.sync_statistics:
            return self._forward_synchronised(x, weight, bias)
        m = x.numel() // c
        if self.update_statistics and m > 1 and self.running_mean.dtype == x.dtype:
            return self._forward_updating(x, weight, bias)
        # One fused pass gives the output and the batch statistics (mean, 1/sqrt(var_b + eps)).
        y, mean_b, invstd = torch.ops.aten.native_batch_norm(x, weight, bias, None, None, True, 0.0, self.eps)
        if not self.update_statistics:
            return y
        with torch.no_grad():
            var_b = invstd.reciprocal().square_().sub_(self.eps)  # biased batch variance
            if m > 1:
                var_b.mul_(m / (m - 1))
            self._update_statistics(mean_b, var_b)
        return y

    def _forward_updating(self, x, weight, bias):
        """TRAIN pass that also updates the statistics, in fewer ops: PyTorch's fused batch norm
        (momentum 1) leaves the batch mean and unbiased variance (Caffe's m/(m−1), m = N·H·W > 1)
        in private scratch tensors, which then enter the running statistics: BVLC's sums
        r = maf·r + b and s = maf·s + 1, or NVCaffe's normalised average r += (b − r)/weight_sum.
        The stored blobs are not the op's inputs, so a script may write them between forward
        and backward."""
        scratch = getattr(self, "_batch_stats", None)
        if scratch is None or scratch[0].device != x.device or scratch[0].dtype != x.dtype:
            scratch = self._batch_stats = [torch.zeros_like(self.running_mean),
                                           torch.zeros_like(self.running_var)]
        y, _, _ = torch.ops.aten.native_batch_norm(x, weight, bias, scratch[0], scratch[1], True, 1.0, self.eps)
        maf = self.maf
        stats = [self.running_mean, self.running_var]
        with torch.no_grad():
            if self.nvcaffe:
                self.weight_sum = maf * self.weight_sum + 1.0
                torch._foreach_lerp_(stats, scratch, 1.0 / self.weight_sum)
            else:
                torch._foreach_mul_(stats, maf)
                torch._foreach_add_(stats, scratch)
                self.factor.mul_(maf).add_(1.0)
        return y

    def _forward_synchronised(self, x, weight, bias):
        """TRAIN pass over the global batch of every process (brewnet.distributed.batchnorm):
        the output and, when updating, the running statistics from the global mean and the
        global variance (Caffe's m/(m−1) with m the global N·H·W), identical on every rank."""
        from ..distributed.batchnorm import normalize
        shift = self._global_stats()[0] if self.update_statistics else None
        y, mean_b, var_b, count = normalize(x, weight, bias, self.eps, shift)
        if self.update_statistics:
            with torch.no_grad():  # Caffe's m/(m−1), m the global count (no device sync)
                factor = torch.where(count > 1, count / (count - 1).clamp(min=1), torch.ones_like(count))
                self._update_statistics(mean_b.detach(), var_b.detach() * factor.to(var_b.dtype))
        return y

    def resume_average(self, batches: int) -> None:
        """NVCaffe dialect: the stored averages have seen ``batches`` TRAIN batches (a solver
        resuming at iteration N: N·iter_size), so their weight is 1 + maf + … + maf^(batches−1)."""
        m = self.maf
        self.weight_sum = float(batches) if m == 1.0 else (1.0 - m ** batches) / (1.0 - m)

    def begin_recalibration(self) -> None:
        """Start re-estimating the statistics as the exact average over the batches to come
        (moving_average_fraction 1 from zero), for Solver.recalibrate_batchnorm."""
        self._saved_maf, self.maf = self.maf, 1.0
        with torch.no_grad():
            self.running_mean.zero_()
            self.running_var.zero_()
            if not self.nvcaffe:  # BVLC's factor s restarts; NVCaffe's correction blob stays 1
                self.factor.zero_()
        self.weight_sum = 0.0

    def end_recalibration(self) -> None:
        self.maf = self._saved_maf

    def _update_statistics(self, mean_b: torch.Tensor, var_unbiased: torch.Tensor) -> None:
        maf = self.maf
        if self.nvcaffe:  # normalised, unbiased running averages; correction blob stays 1
            self.weight_sum = maf * self.weight_sum + 1.0
            rate = 1.0 / self.weight_sum
            self.running_mean.add_(mean_b.to(self.running_mean.dtype) - self.running_mean, alpha=rate)
            self.running_var.add_(var_unbiased.to(self.running_var.dtype) - self.running_var, alpha=rate)
        else:  # BVLC: unnormalised sums with the factor s
            self.factor.mul_(maf).add_(1.0)
            stats = [self.running_mean, self.running_var]
            torch._foreach_mul_(stats, maf)
            torch._foreach_add_(stats, [mean_b.to(self.running_mean.dtype), var_unbiased.to(self.running_var.dtype)])

    # ----- loading caffemodels -------------------------------------------------------------
    def load_caffe_blobs(self, arrays, source_param=None) -> list[str]:
        """Load any known BatchNorm layout (see brewnet.formats.batchnorm_layouts); return notes."""
        import numpy as np

        c = int(self.running_mean.shape[0])
        info = detect(arrays, source_param, self.name, channels=c)
        if info.channels != c:
            self.fail(f"caffemodel has {info.channels} channels ({info.layout} layout, blob shapes "
                      f"{', '.join(str(tuple(np.shape(a))) for a in arrays)}), the net has {c}")
        notes = list(info.notes)
        has_affine = info.scale is not None
        if has_affine and not self.scale_bias:
            why = implicit_scale_bias(info, self.param, source_param)
            shapes = info.shapes or ", ".join(str(tuple(np.shape(a))) for a in arrays)
            if why is not None and info.ambiguous and not declares_scale_bias(source_param):
                self.fail(f"the caffemodel's {len(arrays)} blobs have one channel (shapes {shapes}), so "
                          "their layout is ambiguous (NVCaffe 0.14 cuDNN [scale, bias, unused, mean, var], "
                          "0.15 [scale, bias, mean, var, counter] or 0.16/0.17 [mean, var, correction, scale, "
                          f"bias]; read as {info.layout}), and this prototxt declares no scale/bias to settle "
                          "it. Add `scale_bias: true` to this layer's batch_norm_param to load it that way, "
                          "or check which NVCaffe wrote the file")
            if why is None:
                if not info.affine_is_identity():
                    self.fail(f"the caffemodel holds NVCaffe BatchNorm scale/bias ({info.layout} layout "
                              f"{LAYOUT_BLOBS.get(info.layout, '')}, shapes {shapes}), but this prototxt's "
                              "BatchNorm declares none (no scale_bias, scale_filler, bias_filler or engine "
                              "field: BVLC dialect, where a Scale layer holds γ/β), and NVCaffe 0.16/0.17 "
                              "write them only for layers that declare them. Add `scale_bias: true` to this "
                              "layer's batch_norm_param to load them here, or convert the model: `brewnet "
                              "convert -model M -weights W -to bvlc -output P` (moves them into a Scale layer)")
                notes.append(f"layer '{self.name}' (BatchNorm): dropped the file's identity scale (1) and bias (0)")
            else:
                self._take_scale_bias(why)
                notes.append(f"layer '{self.name}' (BatchNorm): {info.layout} layout "
                             f"{LAYOUT_BLOBS[info.layout]}: the prototxt declares no scale/bias, but {why}: "
                             "scale/bias loaded as the layer's learnable blobs 3 and 4 and applied after "
                             "normalising, as with `scale_bias: true` (which the layer now records, so "
                             "net.save writes NVCaffe 0.16/0.17 order [mean, var, correction, scale, bias])")

        def put(blob, values):
            with torch.no_grad():
                blob.copy_(torch.as_tensor(np.asarray(values, dtype=np.float64).reshape(blob.shape),
                                           dtype=blob.dtype))

        if not self.nvcaffe and info.raw_bvlc is not None:  # BVLC into BVLC: exactly as stored
            put(self.running_mean, info.raw_bvlc[0])
            put(self.running_var, info.raw_bvlc[1])
            put(self.factor, [info.raw_bvlc[2]])
        else:  # normalised statistics; BVLC layers store them with s = 1
            put(self.running_mean, info.mean)
            put(self.running_var, info.var)
            put(self.factor, [1.0])
            if not self.nvcaffe:
                notes.append(f"layer '{self.name}' (BatchNorm): stored as BVLC accumulators with s = 1")
        if self.scale_bias:
            if has_affine:
                put(self.weight, info.scale)
                put(self.bias, info.bias)
            else:
                notes.append(f"layer '{self.name}' (BatchNorm): the caffemodel has no scale/bias; "
                             "they keep their filler values")
        if info.eps is not None and info.eps != self.eps:
            self.eps = info.eps
        if info.eps_min is not None and self.eps < info.eps_min * (1 - 1e-6):  # eps is a float32
            notes.append(f"layer '{self.name}' (BatchNorm): eps {self.eps:g} raised to the cuDNN minimum "
                         f"{info.eps_min:g}")
            self.eps = info.eps_min
        if self.nvcaffe:  # a loaded average counts as converged: NVCaffe's own update from here
            self.weight_sum = 1.0 / (1.0 - self.maf) if self.maf < 1 else 1.0
        self.loaded_layout = info.layout
        return notes

    def _take_scale_bias(self, why: str) -> None:
        """Become the layer `scale_bias: true` makes (the file has scale/bias the prototxt left
        implicit): NVCaffe dialect, learnable scale (1) and bias (0) as blobs 3 and 4, and the
        field recorded in this layer's LayerParameter (what net.save writes)."""
        ref = self.running_mean
        c = int(ref.shape[0])
        self.param.batch_norm_param.scale_bias = True
        self.nvcaffe = True
        self.scale_bias = True
        self.implicit_scale_bias = why
        self.add_blob("weight", torch.ones(c, dtype=ref.dtype, device=ref.device))
        self.add_blob("bias", torch.zeros(c, dtype=ref.dtype, device=ref.device))
        for i, blob in ((3, self.weight), (4, self.bias)):
            blob.requires_grad_(self.param_spec(i).lr_mult != 0)
