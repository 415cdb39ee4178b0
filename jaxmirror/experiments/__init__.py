"""Experiments: each module returns its data and draws its figures, using the public API.

`jaxmirror.experiments.reproduce.reproduce(name, scale, out)` runs one (or `"all"`) and
writes its tables and figures; `default_scale()` is the scale a notebook should use
here (`full` on an accelerator, `small` on a CPU; `JAXMIRROR_SCALE` overrides)."""

from ._common import default_scale as default_scale
