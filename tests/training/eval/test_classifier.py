"""The reference classifier learns a trivially separable toy set, deterministically."""

import numpy as np

from training.eval.classifier import accuracy, train_classifier


def toy_set(n_per_class, seed):
    """Class c = a bright horizontal line at Doppler row 6 + 10 c over a -50 dB noisy floor (32 x 32)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-60, -40, (3 * n_per_class, 32, 32)).astype(np.float32)
    y = np.repeat(np.arange(3), n_per_class)
    for i, c in enumerate(y):
        x[i, 6 + 10 * c: 8 + 10 * c] = 0.0
    return x, y


def test_learns_toy_set_and_is_deterministic():
    x, y = toy_set(12, seed=0)
    xt, yt = toy_set(10, seed=1)
    clf = train_classifier(x, y, 3, dyn_range_db=60.0, epochs=3, seed=0, min_steps=40)
    assert accuracy(clf, xt, yt) >= 0.95
    assert clf.features(xt).shape == (30, 64)
    assert clf.predict(xt[:, None]).shape == (30,)  # (N, C, H, W) works too
    clf2 = train_classifier(x, y, 3, dyn_range_db=60.0, epochs=3, seed=0, min_steps=40)
    assert np.array_equal(clf.logits(xt), clf2.logits(xt))
    shuffled = train_classifier(x, np.random.default_rng(0).permutation(y), 3, dyn_range_db=60.0, epochs=3,
                                seed=0, min_steps=40)
    assert accuracy(shuffled, xt, yt) < 0.8  # labels without signal are not learned: the test can fail
