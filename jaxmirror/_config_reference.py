"""The configuration file's reference page (`docs/configuration.md`), generated from
the same registries and constructors that `_config` validates against, so that the
page cannot fall behind the library: `python -m jaxmirror._config_reference` prints
it, and a test compares the stored page with it."""

import inspect

from . import datasets as _datasets
from ._config import (
    BACKENDS,
    FORMULATIONS,
    PAIRS,
    parameters,
    SCHEDULES,
    STRATEGIES,
)
from ._pairs import AbstractMatrixPair


def _signature(constructor) -> str:
    """`name` for required parameters, `name = default` for optional ones."""
    required, optional = parameters(constructor)
    signature = inspect.signature(constructor).parameters
    shown = [f"`{name}`" for name in required]
    shown += [f"`{name} = {signature[name].default!r}`" for name in optional]
    return ", ".join(shown) or "none"


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.split("\n\n")[0].replace("\n", " ").replace("|", "\\|")


def _rows(registry) -> list[str]:
    return [
        f"| `{name}` | `{value.__name__}` | {_signature(value)} | {_summary(value)} |"
        for name, value in registry.items()
    ]


def _choices(values) -> str:
    return " \\| ".join(f"`{value}`" for value in values)


def reference() -> str:
    """The Markdown page."""
    from . import _config

    example = _config.__doc__.split("```yaml\n")[1].split("```")[0]
    matrix = [n for n, p in PAIRS.items() if issubclass(p, AbstractMatrixPair)]
    lines = [
        "# Sweep configuration reference",
        "",
        "`jaxmirror sweep CONFIG.yaml --out DIR` reads a YAML file with the keys below",
        "and runs `jm.sweep` on it; every error names the key path (`solver.rtol: must",
        "be a number > 0, got -1.0`) and exits with status 2. This page is generated",
        "from the library (`python -m jaxmirror._config_reference`).",
        "",
        "```yaml",
        example.rstrip(),
        "```",
        "",
        "## Top-level keys",
        "",
        "| key | required | type | default | meaning |",
        "|---|---|---|---|---|",
        "| `problem` | yes | mapping | - | the data: `kind` and its parameters "
        "(below), or `{kind: npz, path: FILE}` with arrays `Z`, `y` (and `truth`) |",
        "| `pair` | yes | name or mapping | - | the (g, h) pair: a name, or "
        "`{kind: NAME, PARAMETER: value}` (below) |",
        "| `init` | no | mapping | `{x0: 0.0}` and the pair's scale | `pair.init(x0, "
        f"scale)`; matrix pairs ({', '.join(f'`{m}`' for m in matrix)}): "
        "`{scale: 0.01, seed: 0}` or `{aligned: true, scale: S}` |",
        "| `schedule` | yes | mapping | - | `kind` (below), `fixed` (parameters every "
        "configuration shares) and `grid` (outer product of axes) |",
        "| `t1` | yes | number > 0 | - | the final time of every flow |",
        "| `solver` | no | mapping | library defaults | `formulation`, `rtol`, `atol`, "
        "`max_steps` |",
        "| `sweep` | no | mapping | library defaults | `strategy`, `chunk_size`, "
        "`backend` |",
        "| `precision` | no | `float64` \\| `float32` | `float64` | the dtype of every "
        "array |",
        "",
        "A grid axis is `[start, stop, num]` (`numpy.linspace`) or `{values: [...]}`;",
        "numbers may be written `1e-6`.",
        "",
        "## `solver` and `sweep`",
        "",
        "| key | type | default | allowed |",
        "|---|---|---|---|",
        f"| `solver.formulation` | name | `auto` | {_choices(FORMULATIONS)} |",
        "| `solver.rtol` | number | 1e-6 (float64), 100 eps (float32) | > 0, <= 0.1 |",
        "| `solver.atol` | number | 1e-9 (float64), eps (float32) | > 0, <= 1e-2 |",
        "| `solver.max_steps` | integer | 100000 | > 0 |",
        f"| `sweep.strategy` | name | `auto` | {_choices(STRATEGIES)} |",
        "| `sweep.chunk_size` | integer | chosen from memory | > 0, <= the number of "
        "configurations |",
        f"| `sweep.backend` | name | `auto` | {_choices(BACKENDS)} |",
        "",
        "## Problems (`problem.kind`)",
        "",
        "| kind | function | parameters | description |",
        "|---|---|---|---|",
        *_rows(_datasets.GENERATORS),
        "",
        "## Pairs (`pair` or `pair.kind`)",
        "",
        "| name | class | parameters | description |",
        "|---|---|---|---|",
        *_rows(PAIRS),
        "",
        "## Schedules (`schedule.kind`; parameters in `fixed` or `grid`)",
        "",
        "| kind | class | parameters | description |",
        "|---|---|---|---|",
        *_rows(SCHEDULES),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference(), end="")
