# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sparse regression: phase diagram and sample complexity
#
# Runs `jaxmirror reproduce sparse`: at `full` scale on an accelerator, `small` on a CPU
# (override with the environment variable `JAXMIRROR_SCALE=tiny|small|full`).

# %%
import pathlib

import jax


jax.config.update("jax_enable_x64", True)
from IPython.display import display, Image, Markdown

import jaxmirror as jm
from jaxmirror.experiments import default_scale
from jaxmirror.experiments.reproduce import reproduce


jm.enable_compilation_cache()  # keep compiled programs across sessions
scale = default_scale()
print("backend:", jax.default_backend(), "| scale:", scale)

# %%
out = reproduce("sparse", scale=scale, out=pathlib.Path("reproduce"))
display(Markdown((out / "sparse.md").read_text()))
for path in sorted(out.glob("sparse*.png")):
    display(Image(filename=str(path)))
