"""A small Vision Transformer (Equinox) on scikit-learn's bundled digits, trained with
AdamW under no, constant and switch-off weight decay.

A smoke test of the training machinery at digits scale (8x8 pixels, 1,797 images),
reported as measured: it is not evidence for or against the paper's ImageNet result
(over 1% better validation accuracy from switching weight decay off), which needs
ImageNet-scale training. AdamW's decoupled decay is outside the theory.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmirror as jm

from ._common import figure, log, mean_spread, table


SIZES = {
    "tiny": dict(steps=150, seeds=1, dim=16, depth=1),
    "small": dict(steps=1200, seeds=3, dim=32, depth=1),
    "full": dict(steps=6000, seeds=5, dim=64, depth=2),
}
LR, WEIGHT_DECAY, BATCH = 3e-3, 0.1, 128


class Block(eqx.Module):
    norm1: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP

    def __init__(self, dim, heads, key):
        k1, k2 = jax.random.split(key)
        self.norm1 = eqx.nn.LayerNorm(dim)
        self.attention = eqx.nn.MultiheadAttention(heads, dim, key=k1)
        self.norm2 = eqx.nn.LayerNorm(dim)
        self.mlp = eqx.nn.MLP(dim, dim, 2 * dim, 1, activation=jax.nn.gelu, key=k2)

    def __call__(self, tokens):
        normed = jax.vmap(self.norm1)(tokens)
        tokens = tokens + self.attention(normed, normed, normed)
        return tokens + jax.vmap(self.mlp)(jax.vmap(self.norm2)(tokens))


class ViT(eqx.Module):
    """2x2 patches of an 8x8 image (16 tokens) + a class token, `depth` blocks."""

    embed: eqx.nn.Linear
    cls: jax.Array
    position: jax.Array
    blocks: list
    head: eqx.nn.Linear

    def __init__(self, dim, depth, heads, key):
        keys = jax.random.split(key, depth + 3)
        self.embed = eqx.nn.Linear(4, dim, key=keys[0])
        self.cls = 0.02 * jax.random.normal(keys[1], (1, dim))
        self.position = 0.02 * jax.random.normal(keys[2], (17, dim))
        self.blocks = [Block(dim, heads, k) for k in keys[3:]]
        self.head = eqx.nn.Linear(dim, 10, key=keys[-1])

    def __call__(self, image):
        patches = image.reshape(4, 2, 4, 2).transpose(0, 2, 1, 3).reshape(16, 4)
        tokens = (
            jnp.concatenate([self.cls, jax.vmap(self.embed)(patches)]) + self.position
        )
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(tokens[0])

    def score_matrices(self):
        """W_Q W_K^T per block and head: the attention products weight decay acts on."""
        out = []
        for block in self.blocks:
            att = block.attention
            heads, dim = att.num_heads, att.query_size
            q = att.query_proj.weight.reshape(heads, -1, dim)
            k = att.key_proj.weight.reshape(heads, -1, dim)
            out.extend(jnp.einsum("hqi,hqj->hij", q, k))
        return out


def _data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train, val = order[:1400], order[1400:]
    return (images[train], digits.target[train]), (images[val], digits.target[val])


def _train(schedule, cfg, seed, data):
    (xtr, ytr), (xva, yva) = data
    model = ViT(cfg["dim"], cfg["depth"], heads=2, key=jax.random.PRNGKey(seed))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    matrices = jax.tree_util.tree_map(lambda x: x.ndim >= 2, params)
    optimizer = optax.adamw(LR, weight_decay=schedule.as_optax(LR), mask=matrices)
    state = optimizer.init(params)
    xtr, ytr = jnp.asarray(xtr), jnp.asarray(ytr)

    def loss_fn(params, x, y):
        logits = jax.vmap(eqx.combine(params, static))(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def epoch(params, state, key):
        def step(carry, k):
            params, state = carry
            idx = jax.random.choice(k, xtr.shape[0], (BATCH,), replace=False)
            grads = jax.grad(loss_fn)(params, xtr[idx], ytr[idx])
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, state), _ = jax.lax.scan(
            step, (params, state), jax.random.split(key, 50)
        )
        return params, state

    key = jax.random.PRNGKey(1000 + seed)
    accuracy_curve = []
    for _ in range(cfg["steps"] // 50):
        key, sub = jax.random.split(key)
        params, state = epoch(params, state, sub)
        logits = jax.vmap(eqx.combine(params, static))(jnp.asarray(xva))
        accuracy_curve.append(
            float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(yva)))
        )
    model = eqx.combine(params, static)
    stats = []
    for matrix in model.score_matrices():
        sv = np.linalg.svd(np.asarray(matrix), compute_uv=False)
        stats.append(
            (
                int(np.sum(sv > 1e-2 * sv[0])),
                float(np.sum(sv) / (np.sqrt(len(sv)) * np.linalg.norm(sv))),
            )
        )
    return accuracy_curve, stats


def run(scale: str = "small"):
    cfg = SIZES[scale]
    data = _data()
    t_off = 0.5 * cfg["steps"] * LR  # switch weight decay off halfway through
    schedules = {
        "none": jm.Constant(0.0),
        "constant": jm.Constant(WEIGHT_DECAY),
        "switch-off": jm.SwitchOff(WEIGHT_DECAY, t_off),
    }
    results = {"scale": scale, "t_off_step": cfg["steps"] // 2}
    for key, schedule in schedules.items():
        runs = [_train(schedule, cfg, seed, data) for seed in range(cfg["seeds"])]
        results[key] = runs
        log(f"vit: {key} done")
    return results


def report(results, out):
    plt = figure()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    rows = []
    for key in ("none", "constant", "switch-off"):
        runs = results[key]
        curves = np.array([c for c, _ in runs])
        steps = 50 * np.arange(1, curves.shape[1] + 1)
        ax.plot(steps, curves.mean(0), label=key)
        final = curves[:, -1]
        ranks = [np.mean([r for r, _ in stats]) for _, stats in runs]
        ratio = [np.mean([q for _, q in stats]) for _, stats in runs]
        rows.append(
            [key, mean_spread(100 * final), mean_spread(ranks), mean_spread(ratio)]
        )
    ax.axvline(results["t_off_step"], color="k", ls=":", lw=0.8, label="switch-off")
    ax.set_xlabel("AdamW step")
    ax.set_ylabel("validation accuracy")
    ax.set_title("ViT on sklearn digits", fontsize=10)
    ax.legend()
    path = out / "vit_digits.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    text = (
        "## Vision Transformer on digits (AdamW): a smoke test of the training "
        "machinery\n\n"
        "At digits scale; not evidence for or against the paper's ImageNet "
        "result.\n\n"
        f"lr={LR}, weight decay {WEIGHT_DECAY} on weight matrices, switch-off halfway; "
        "rank: singular values of W_Q W_K^T above 1% of the largest, averaged over "
        "heads; sparsity ratio: |sv|_1 / (sqrt(k) |sv|_2) (1 = flat spectrum, lower = "
        "more concentrated).\n\n"
    )
    text += table(
        ["schedule", "validation accuracy (%)", "rank of W_Q W_K^T", "spectral ratio"],
        rows,
    )
    return text, [path]
