"""`jaxmirror reproduce NAME|all`: run experiments, write PNG figures and Markdown tables."""

import importlib
import pathlib
import time

from ._common import check_scale, log, output_dir


EXPERIMENTS = {
    "sparse": ("jaxmirror.experiments.sparse", {}),
    "generalization": ("jaxmirror.experiments.generalization", {}),
    "matrix": ("jaxmirror.experiments.matrix", {}),
    "matrix_generalization": ("jaxmirror.experiments.matrix_generalization", {}),
    "attention": ("jaxmirror.experiments.models", {"names": ("attention",)}),
    "lora": ("jaxmirror.experiments.models", {"names": ("lora",)}),
    "models_generalization": ("jaxmirror.experiments.models_generalization", {}),
    "vit": ("jaxmirror.experiments.vit", {}),
    "range": ("jaxmirror.experiments.effects", {"name": "range"}),
    "positional": ("jaxmirror.experiments.effects", {"name": "positional"}),
    "deep": ("jaxmirror.experiments.effects", {"name": "deep"}),
}


def reproduce(name: str, scale: str = "small", out="reproduce") -> pathlib.Path:
    """Run one experiment (or `"all"`) and write `NAME.md` and its figures into `out`."""
    import jax

    if not jax.config.jax_enable_x64:
        raise ValueError(
            "`reproduce` checks flows against closed forms in float64: call "
            "jax.config.update('jax_enable_x64', True) first (the `jaxmirror` command "
            "and the notebooks do)."
        )
    check_scale(scale)
    names = list(EXPERIMENTS) if name == "all" else [name]
    for item in names:
        if item not in EXPERIMENTS:
            raise ValueError(
                f"`name` must be one of {sorted(EXPERIMENTS)} or 'all', got {item!r}."
            )
    out = output_dir(out)
    for item in names:
        module_name, kwargs = EXPERIMENTS[item]
        module = importlib.import_module(module_name)
        log(f"{item}: running at scale {scale!r}")
        start = time.perf_counter()
        results = module.run(scale, **kwargs)
        text, figures = module.report(results, out)
        seconds = time.perf_counter() - start
        figures_md = "\n".join(f"![{p.stem}]({p.name})" for p in figures)
        (out / f"{item}.md").write_text(
            f"{text}\n\n{figures_md}\n\n_Scale `{scale}`, {seconds:.0f} s._\n"
        )
        log(f"{item}: done in {seconds:.0f} s -> {out / (item + '.md')}")
        if len(names) > 1:
            # Each compiled CPU program keeps its code mapped in many memory regions;
            # a process that keeps every experiment's programs nears the kernel's
            # limit on mappings (`vm.max_map_count`), past which loading one crashes.
            jax.clear_caches()
    return out
