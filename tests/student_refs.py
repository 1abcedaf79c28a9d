"""Naive NumPy references for every student kind (tests/test_students.py), in float64.

Each takes the embedding output e [B, F, d] and ONE copy's params/batch_stats and returns the logits
[B]. They loop explicitly over pairs i<j, fields, heads and channels instead of mirroring the
vectorised code. Tiny shapes: B=6, hidden (8, 6).

Mode: ``train=None`` is eval (BN uses the running statistics, dropout is the identity); ``train=Train(rate,
rows)`` is train mode: BN normalises with the biased batch statistics of the real rows, and every dropout
keeps exactly ``keep_pattern(shape)`` (the tests patch the same pattern in for the hash mask), scaling the
kept values by 1/(1−rate), at the place the spec (§2) puts it.
"""

import itertools
from typing import NamedTuple

import numpy as np

B = 6
HIDDEN = (8, 6)
EPS = 1e-5

relu = lambda x: np.maximum(x, 0.0)  # noqa: E731


class Train(NamedTuple):
    """Train mode. ``rows``: the [B] 0/1 padding mask (None: every row real); padded rows are normalised and
    dropped out like the others but never enter the BN statistics."""

    rate: float = 0.0
    rows: np.ndarray | None = None


def keep_pattern(shape):
    """The fixed dropout keep mask of the train-mode tests: element i (row-major) is dropped iff i % 7 < 2.
    The period 7 divides no width here, so the dropped columns change from row to row."""
    return np.arange(int(np.prod(shape))).reshape(shape) % 7 >= 2


def dropout(x, train):
    """Inverted dropout with ``keep_pattern``; the identity at eval or rate 0."""
    if train is None or train.rate == 0:
        return x
    return np.where(keep_pattern(x.shape), x / (1.0 - train.rate), 0.0)


def lin(x, p):
    return x @ p["kernel"] + (p["bias"] if "bias" in p else 0.0)


def bn(x, p, s, train=None, chan=-1):
    """BatchNorm1d with channel axis ``chan`` (None: ONE channel, ECN's BatchNorm1d(1)). Eval: the running
    statistics ``s``; train: mean and biased variance over the real rows and every other axis."""
    if train is None:
        mean, var = s["mean"], s["var"]
    else:
        real = x if train.rows is None else x[np.asarray(train.rows) > 0]
        axes = None if chan is None else tuple(a for a in range(x.ndim) if a != chan % x.ndim)
        mean, var = real.mean(axis=axes), real.var(axis=axes)
    stats = [mean, var, p["scale"], p["bias"]]
    if chan is not None:
        shape = [1] * x.ndim
        shape[chan] = -1
        stats = [np.reshape(a, shape) for a in stats]
    mean, var, scale, bias = stats
    return (x - mean) / np.sqrt(var + EPS) * scale + bias


def layer_norm(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * p["scale"] + p["bias"]


def np_tower(x, p, s, n, train=None):
    """MLP_Block hidden layers (spec §2.1): Dense_i → BN_i → ReLU → Dropout."""
    for i in range(n):
        x = dropout(relu(bn(lin(x, p[f"Dense_{i}"]), p[f"BatchNorm_{i}"], s[f"BatchNorm_{i}"], train)), train)
    return x


def np_mlp(x, p, s, n=len(HIDDEN), train=None):
    x = x.reshape(x.shape[0], -1)
    return lin(np_tower(x, p, s, n, train), p[f"Dense_{n}"])[:, 0]


def np_ipnn(e, p, s, train=None):
    b, f, _ = e.shape
    rows = []
    for r in range(b):
        pairs = [float(e[r, i] @ e[r, j]) for i in range(f) for j in range(i + 1, f)]  # i<j, row-major
        rows.append(np.concatenate([e[r].reshape(-1), pairs]))
    return np_mlp(np.stack(rows), p["dnn"], s["dnn"], train=train)


def np_final_block(e, p, s, gate, train=None):
    b, f, d = e.shape
    if gate:
        w, c = p["field_gate"]["linear"]["kernel"], p["field_gate"]["linear"]["bias"]  # kernel [in f', out f]
        g = np.zeros_like(e)
        for r, fi, j in itertools.product(range(b), range(f), range(d)):
            g[r, fi, j] = sum(w[fj, fi] * e[r, fj, j] for fj in range(f)) + c[fi]
        e = np.concatenate([e, e * g], axis=1)
    x = e.reshape(b, -1)
    for i, u in enumerate(HIDDEN):
        h = lin(x, p[f"FinalLinear_{i}"]["linear"])
        ha, hb = h[:, : u // 2], h[:, u // 2 :]
        x = dropout(relu(bn(np.concatenate([ha, hb * ha], 1), p[f"BatchNorm_{i}"], s[f"BatchNorm_{i}"], train)), train)
    return lin(x, p["fc"])[:, 0]


def np_final(e, p, s, blocks=1, gate=True, train=None):
    z = np_final_block(e, p["block1"], s["block1"], gate, train)
    return z if blocks == 1 else 0.5 * (z + np_final_block(e, p["block2"], s["block2"], False, train))


def np_relayout(e):
    b, f, d = e.shape
    first = [e[:, fi, k] for fi in range(f) for k in range(d // 2)]
    second = [e[:, fi, k] for fi in range(f) for k in range(d // 2, d)]
    return np.stack(first + second, axis=1)


def np_ecn(e, p, s, layers, train=None):
    x = np_relayout(e)
    for i in range(layers):
        h = x @ p[f"w_{i}"]["kernel"]
        h = bn(h, p[f"bn_{i}"], s[f"bn_{i}"], train, chan=None)  # one channel: statistics over rows × L/2 positions
        m = relu(layer_norm(h, p[f"ln_{i}"]))
        x = dropout(x * (np.concatenate([h, h * m], 1) + p[f"b_{i}"]) + x, train)  # Dropout(x ⊙ (H' + b) + x)
    return lin(x, p["fc"])[:, 0]


def np_cross_v2(x0, p, layers):
    x = x0
    for i in range(layers):
        x = x + x0 * lin(x, p[f"cross_{i}"])
    return x


def np_crossnet(e, p, s, train=None):  # no BN, no dropout
    return lin(np_cross_v2(e.reshape(B, -1), p, 2), p["fc"])[:, 0]


def np_dcnv2(e, p, s, train=None):
    x0 = e.reshape(B, -1)
    return lin(np.concatenate([np_tower(x0, p, s, len(HIDDEN), train), np_cross_v2(x0, p, 2)], 1), p["fc"])[:, 0]


def np_dcn(e, p, s, train=None):
    x0 = e.reshape(B, -1)
    x = x0
    for i in range(2):
        w, b = p[f"cross_{i}"]["w"]["kernel"][:, 0], p[f"cross_{i}"]["b"]
        x = x + x0 * (x @ w)[:, None] + b
    return lin(np.concatenate([x, np_tower(x0, p, s, len(HIDDEN), train)], 1), p["fc"])[:, 0]


def np_cin(e, p, layers=(3, 2)):
    b, f, d = e.shape
    x, pooled = e, []
    for li, h_out in enumerate(layers):
        w, c = p[f"conv_{li}"]["kernel"], p[f"conv_{li}"]["bias"]  # [C_in, H_out]
        h_prev = x.shape[1]
        z = np.zeros((b, f * h_prev, d))
        for h, m in itertools.product(range(f), range(h_prev)):
            z[:, h * h_prev + m] = e[:, h] * x[:, m]
        x = np.stack([sum(w[ch, o] * z[:, ch] for ch in range(f * h_prev)) + c[o] for o in range(h_out)], axis=1)
        pooled.append(x.sum(-1))
    return lin(np.concatenate(pooled, 1), p["fc"])[:, 0]


def np_lr(e, p):
    return lin(e.reshape(e.shape[0], -1), p["lr"])[:, 0]


def np_fm(e):
    f = e.shape[1]
    return sum((e[:, i] * e[:, j]).sum(-1) for i in range(f) for j in range(i + 1, f))


def np_attention(x, p, heads, a, use_ln=True, train=None):
    b, f, d_in = x.shape
    hd = a // heads
    q, k, v = (x @ p[n]["kernel"] for n in ("W_q", "W_k", "W_v"))
    out = np.zeros((b, f, a))
    probs = np.zeros((b, heads, f, f))  # [B, heads, query, key]: the layout the dropout mask is drawn in
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        sc = np.einsum("bqc,bkc->bqk", q[..., sl], k[..., sl]) / np.sqrt(hd)
        att = np.exp(sc - sc.max(-1, keepdims=True))
        probs[:, h] = att / att.sum(-1, keepdims=True)
    probs = dropout(probs, train)  # on the attention probabilities, after the softmax
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        out[..., sl] = probs[:, h] @ v[..., sl]
    out = out + (x @ p["W_res"]["kernel"] if d_in != a else x)
    if use_ln:
        out = layer_norm(out, p["layer_norm"])
    return relu(out)


def np_autoint(e, p, s, train=None):
    x = e
    for i in range(2):
        x = np_attention(x, p[f"attention_{i}"], heads=2, a=6, train=train)
    return lin(x.reshape(B, -1), p["fc"])[:, 0] + np_mlp(e, p["dnn"], s["dnn"], train=train)


def np_afn(e, p, s, train=None):
    a = np.log(np.maximum(np.abs(e), 1e-5))  # [B, F, d]
    a = bn(a, p["log_batch_norm"], s["log_batch_norm"], train, chan=1)  # BatchNorm1d(F): per field, over B × d
    w = p["coefficient_W"]["kernel"]  # [F, N]
    c = np.exp(np.einsum("bfd,fn->bnd", a, w))  # [B, N, d]
    c = bn(c, p["exp_batch_norm"], s["exp_batch_norm"], train, chan=1)  # BatchNorm1d(N)
    z = np.stack([np_mlp(c, p["afn_dnn"], s["afn_dnn"], train=train), np_mlp(e, p["dnn"], s["dnn"], train=train)], 1)
    return lin(z, p["fc"])[:, 0]


NAIVE = {  # kind → f(e, params, batch_stats, train=None)
    "mlp": np_mlp,
    "ipnn": np_ipnn,
    "final": np_final,
    "ecn": lambda e, p, s, train=None: np_ecn(e, p, s, 2, train),
    "crossnet": np_crossnet,
    "dcnv2": np_dcnv2,
    "dcn": np_dcn,
    "cin": lambda e, p, s, train=None: np_cin(e, p["cin"]),
    "xdeepfm": lambda e, p, s, train=None: np_lr(e, p) + np_cin(e, p["cin"]) + np_mlp(e, p["dnn"], s["dnn"], train=train),
    "widedeep": lambda e, p, s, train=None: np_lr(e, p) + np_mlp(e, p["dnn"], s["dnn"], train=train),
    "deepfm": lambda e, p, s, train=None: np_lr(e, p) + np_fm(e) + np_mlp(e, p["dnn"], s["dnn"], train=train),
    "autoint": np_autoint,
    "afn": np_afn,
}
