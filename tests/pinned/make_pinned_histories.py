"""Record the histories that ``tests/test_pinned_histories.py`` pins.

Run once, on the code BEFORE a refactor of the step or the chain, to freeze its behaviour:

    python tests/pinned/make_pinned_histories.py

It writes ``tests/pinned/histories.npz``. The test reruns every case below and asserts the same
history and final parameters bit for bit. Re-recording is a deliberate act: a change that alters
these numbers changes what every seed means, and must say so in its commit.
"""
from __future__ import annotations

import pathlib

import numpy as np

import sims.mechanisms as mech
from sims import data, models, train

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "histories.npz"


def _digits(public: bool):
    ds = data.load_digits(random_state=0)
    if public:
        ds = data.split_public(ds, 0.1, random_state=0)
        return data.standardize(ds, fit_on="public")
    return data.standardize(ds, fit_on="train")


def cases():
    """``name -> (model, dataset, train kwargs)``: every built-in chain, the ablations, both samplings."""
    mlp = models.mlp((64, 16, 10))
    mlp32 = models.mlp((64, 16, 10), dtype=np.float32)
    logit = models.logistic_regression(8)
    lin_ds = data.make_logistic(300, 8, random_state=1)
    dp = _digits(False)
    pub = _digits(True)
    base = dict(epochs=2, sampling_rate=0.05, lr=0.3, random_state=7, record_every=5)
    C, s = 1.0, 1.1
    out = {
        "logistic_dp": (logit, lin_ds, dict(base, clip_norm=0.5, noise_multiplier=1.3)),
        "logistic_shuffle": (logit, lin_ds, dict(base, sampling="shuffle", clip_norm=0.5)),
        "mlp_dp": (mlp, dp, dict(base)),
        "mlp32_dp": (mlp32, dp, dict(base)),
        "mlp_nonprivate": (mlp, dp, dict(base, mode="nonprivate")),
        "mlp_clip_only": (mlp, dp, dict(base, mode="clip_only")),
        "mlp_noise_only": (mlp, dp, dict(base, mode="noise_only")),
        "mlp_momentum": (mlp, dp, dict(base, optimizer="momentum")),
        "mlp_adam": (mlp, dp, dict(base, optimizer="adam", lr=0.01)),
    }
    chains = {
        "per_layer": mech.chain(mech.clip(C, per_layer=True), mech.gaussian_noise(s)),
        "random_k_mtc": mech.chain(mech.random_k(300, "mask_then_clip"), mech.clip(C), mech.gaussian_noise(s)),
        "random_k_ctm": mech.chain(mech.clip(C), mech.random_k(300, "clip_then_mask", rescale=True),
                                   mech.gaussian_noise(s)),
        "random_freeze": mech.chain(mech.random_freeze(0.7), mech.clip(C), mech.gaussian_noise(s)),
        "random_freeze_sparse": mech.chain(mech.random_freeze(0.9, "constant", refresh=3), mech.clip(C),
                                           mech.gaussian_noise(s)),
        "top_k_noisy": mech.chain(mech.clip(C), mech.gaussian_noise(s), mech.top_k(100)),
        "top_k_per_example": mech.chain(mech.top_k(50, "per_example", chunk_size=16), mech.clip(C),
                                        mech.gaussian_noise(s)),
        "public_freeze": mech.chain(mech.public_freeze(0.5), mech.clip(C), mech.gaussian_noise(s)),
        "public_select": mech.chain(mech.public_select(0.5, public_batch_size=32), mech.clip(C),
                                    mech.gaussian_noise(s)),
        "prune_init": mech.chain(mech.magnitude_prune(0.5), mech.clip(C), mech.gaussian_noise(s)),
        "prune_public": mech.chain(mech.magnitude_prune(0.5, "public", public_epochs=1), mech.clip(C),
                                   mech.gaussian_noise(s)),
        "prune_current": mech.chain(mech.magnitude_prune(0.5, "current", every=4), mech.clip(C),
                                    mech.gaussian_noise(s)),
        "topagg": mech.chain(mech.topagg(20, 1.0, 0.1)),
        "low_rank": mech.chain(mech.clip(C), mech.gaussian_noise(s), mech.low_rank(2)),
        "ef_top_k": mech.chain(mech.clip(C), mech.gaussian_noise(s), mech.error_feedback(mech.top_k(100))),
        "ef21_low_rank": mech.chain(mech.clip(C), mech.gaussian_noise(s),
                                    mech.error_feedback(mech.low_rank(2), "ef21")),
    }
    for name, ch in chains.items():
        out[f"chain_{name}"] = (mlp, pub, dict(base, mechanism=ch))
    return out


def run_case(model, ds, kw):
    res = train.train(model, ds, **kw)
    arrays = {f"history.{k}": np.asarray(v) for k, v in res.history.items()}
    arrays["params"] = np.asarray(res.params)
    arrays["epsilon"] = np.asarray(res.privacy["epsilon"])
    return arrays


def main():
    store = {}
    for name, (model, ds, kw) in cases().items():
        for k, v in run_case(model, ds, kw).items():
            store[f"{name}/{k}"] = v
    np.savez_compressed(OUT, **store)
    print(f"wrote {len(store)} arrays for {len(cases())} cases to {OUT}")


if __name__ == "__main__":
    main()
