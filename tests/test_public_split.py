"""sims.data: the checked public split (no public row is a private row) and the notes about
pre-processing that reads private rows. All data use fixed seeds; nothing is timed."""
import dataclasses

import numpy as np
import pytest

from sims import data as D

OVERLAP = "public split overlaps the private training rows"


def _rows(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d))


# ----------------------------------------------------------------------------- public_split
def test_disjoint_accepted_and_read_only_copies():
    Xq, Xp = _rows(50, 4, 0), _rows(10, 4, 1)
    yp = np.arange(10)
    ps = D.public_split(Xp, yp, Xq)
    assert isinstance(ps, D.PublicSplit)
    assert np.array_equal(ps.X, Xp) and np.array_equal(ps.y, yp)
    assert ps.n_private == 50 and ps.n_public == 10 and ps.X.ndim == 2 and ps.y.ndim == 1
    assert not ps.X.flags.writeable and not ps.y.flags.writeable
    Xp[0, 0] = Xq[0, 0]  # the caller's array is not shared
    assert ps.X[0, 0] != Xq[0, 0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ps.X = Xq
    assert ps.verify_disjoint(Xq) is ps


def test_one_shared_row_refused():
    Xq, Xp = _rows(50, 4, 0), _rows(10, 4, 1)
    Xp[3] = Xq[17]
    with pytest.raises(ValueError, match=r"^public split overlaps the private training rows: 1 public "
                                         r"row\(s\) equal a private row \(public indices \[3\]\)"):
        D.public_split(Xp, np.zeros(10), Xq)


def test_several_shared_rows_refused_first_five_listed():
    Xq, Xp = _rows(50, 4, 0), _rows(10, 4, 1)
    for i in (0, 2, 4, 6, 8, 9):
        Xp[i] = Xq[i * 3]
    with pytest.raises(ValueError, match=r"6 public row\(s\).*\[0, 2, 4, 6, 8, \.\.\.\]") as err:
        D.public_split(Xp, np.zeros(10), Xq)
    assert "would then read private data" in str(err.value)


def test_signed_zero_counts_as_equal_but_one_ulp_does_not():
    Xq = np.array([[0.0, 1.0, -2.5], [3.0, 4.0, 5.0]])
    neg = np.array([[-0.0, 1.0, -2.5]])
    assert np.signbit(neg[0, 0]) and neg.tobytes() != Xq[:1].tobytes()
    with pytest.raises(ValueError, match=OVERLAP):
        D.public_split(neg, np.zeros(1), Xq)
    with pytest.raises(ValueError, match=OVERLAP):  # and the other way round
        D.public_split(Xq[:1], np.zeros(1), np.array([[-0.0, 1.0, -2.5]]))
    ulp = Xq[1:].copy()
    ulp[0, 1] = np.nextafter(4.0, np.inf)
    ps = D.public_split(ulp, np.zeros(1), Xq)
    assert ps.X[0, 1] != 4.0
    ulp[0, 1] = np.nextafter(4.0, -np.inf)
    D.public_split(ulp, np.zeros(1), Xq)
    tiny = Xq[:1].copy()
    tiny[0, 0] = np.nextafter(0.0, -np.inf)  # the smallest negative subnormal is not zero
    D.public_split(tiny, np.zeros(1), Xq)


def test_rows_compared_by_value_across_dtypes():
    Xq = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    with pytest.raises(ValueError, match=OVERLAP):
        D.public_split(np.array([[3.0, 4.0]], dtype=np.float32), [0], Xq)
    ps = D.public_split(np.array([[3, 5]], dtype=np.uint8), [0], Xq)
    assert ps.X.dtype == np.float64
    assert D.public_split(np.array([[0.5, 4.0]], dtype=np.float32), [0], Xq).X.dtype == np.float32


def test_hash_collision_cannot_cause_a_false_refusal(monkeypatch):
    """Every row gets the same digest: the exact comparison must still accept disjoint rows."""
    monkeypatch.setattr(D, "_row_digests", lambda X: [b"same"] * X.shape[0])
    Xq, Xp = _rows(20, 3, 0), _rows(5, 3, 1)
    D.public_split(Xp, np.zeros(5), Xq)
    Xp[2] = Xq[7]
    with pytest.raises(ValueError, match=r"1 public row\(s\).*\[2\]"):
        D.public_split(Xp, np.zeros(5), Xq)


def test_labels_are_not_part_of_the_comparison():
    Xq = _rows(5, 2, 0)
    with pytest.raises(ValueError, match=OVERLAP):  # same features, other label: still private data
        D.public_split(Xq[:1], [1], Xq)


@pytest.mark.parametrize("args, match", [
    ((np.zeros(3), np.zeros(3), np.zeros((2, 3))), "^X_public must have 2"),
    ((np.zeros((3, 2)), np.zeros((3, 1)), np.zeros((2, 2))), "^y_public must have 1"),
    ((np.zeros((3, 2)), np.zeros(3), np.zeros(2)), "^X_private must have 2"),
    ((np.zeros((3, 2)), np.zeros(4), np.ones((2, 2))), "^X_public and y_public"),
    ((np.zeros((3, 2)), np.zeros(3), np.ones((2, 3))), "^X_private must have 2 columns"),
    ((np.zeros((0, 2)), np.zeros(0), np.ones((2, 2))), "^X_public must have at least one row"),
    ((np.full((3, 2), np.nan), np.zeros(3), np.ones((2, 2))), "^X_public must contain only finite"),
    ((np.zeros((3, 2)), [0, np.inf, 0], np.ones((2, 2))), "^y_public must contain only finite"),
    ((np.zeros((3, 2)), np.zeros(3), [[1, np.nan]]), "^X_private must contain only finite"),
    ((np.zeros((3, 2)), np.zeros(3), [["a", "b"]]), "^X_private must be a numeric"),
])
def test_shape_and_finiteness_errors_name_the_parameter(args, match):
    with pytest.raises(ValueError, match=match):
        D.public_split(*args)


def test_direct_construction_refused():
    with pytest.raises(TypeError, match=r"public_split\(X_public, y_public, X_private\)"):
        D.PublicSplit(np.zeros((1, 2)), np.zeros(1), 0)
    ps = D.public_split(_rows(3, 2, 1), np.zeros(3), _rows(4, 2, 0))
    with pytest.raises(TypeError, match="public_split"):
        dataclasses.replace(ps, X=_rows(4, 2, 0))


def test_verify_disjoint_against_other_private_rows():
    Xq, Xp = _rows(30, 3, 0), _rows(6, 3, 1)
    ps = D.public_split(Xp, np.zeros(6), Xq)
    with pytest.raises(ValueError, match=r"1 public row\(s\).*\[4\]"):
        ps.verify_disjoint(np.vstack([Xq, Xp[4]]))
    with pytest.raises(ValueError, match="^X_private must have 3 columns"):
        ps.verify_disjoint(np.zeros((2, 4)))


def test_mnist_sized_input_is_hashed_not_compared_pairwise():
    """70 000 x 784 uint8 (MNIST-sized): a pairwise comparison would be 7e7 row pairs; the hash sets
    make it linear. Correctness only is asserted (no timing)."""
    rng = np.random.default_rng(0)
    Xq = rng.integers(0, 256, size=(70_000, 784), dtype=np.uint8)
    Xp = rng.integers(0, 256, size=(2_000, 784), dtype=np.uint8)
    ps = D.public_split(Xp, np.zeros(2_000), Xq)
    assert ps.n_private == 70_000 and ps.X.shape == (2_000, 784)
    Xp[[11, 1999]] = Xq[[69_999, 0]]
    with pytest.raises(ValueError, match=r"2 public row\(s\).*\[11, 1999\]"):
        D.public_split(Xp, np.zeros(2_000), Xq)


# ----------------------------------------------------------------------------- Dataset / split_public
def test_public_split_of_dataset():
    ds = D.make_linear(60, 3, random_state=0)
    assert D.public_split_of(ds) is None
    out = D.split_public(ds, 0.2, random_state=1)
    ps = D.public_split_of(out)
    assert np.array_equal(ps.X, out.X_public) and np.array_equal(ps.y, out.y_public)
    assert ps.n_private == out.n_train
    leaky = dataclasses.replace(out, X_public=np.vstack([out.X_public[1:], out.X_train[5]]))
    with pytest.raises(ValueError, match=OVERLAP):
        D.public_split_of(leaky)
    with pytest.raises(ValueError, match="^ds must"):
        D.public_split_of("ds")


@pytest.mark.parametrize("make", [
    lambda: D.make_logistic(300, 4, random_state=0),
    lambda: D.load_digits(random_state=0),
    lambda: D.load_wine(random_state=1, dtype=np.float32),
])
@pytest.mark.parametrize("shift", [0.0, 1.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_public_output_always_disjoint(make, shift, seed):
    out = D.split_public(make(), 0.3, shift=shift, random_state=seed)
    assert D.public_split_of(out).n_public == out.X_public.shape[0]
    assert out.meta["public_duplicates_moved"] == 0


def test_split_public_keeps_duplicated_rows_on_one_side():
    """Identical train rows must never be split between public and private, whichever is drawn."""
    base = _rows(10, 3, 0)
    X = base[np.arange(40) % 10]  # every row appears 4 times
    ds = D.Dataset(X, np.zeros(40), base[:2], np.zeros(2), "regression", None)
    for seed in range(20):
        out = D.split_public(ds, 0.25, random_state=seed)
        D.public_split_of(out)  # disjoint as rows, not just as indices
        assert out.X_public.shape[0] % 4 == 0 and 0 < out.X_public.shape[0] < 40
        pub = out.meta["public_indices"]
        assert np.array_equal(out.X_public, X[pub]) and out.n_train + len(pub) == 40
    # the side of a group is that of its first copy in the permutation: same seed, same split
    a, b = D.split_public(ds, 0.25, random_state=3), D.split_public(ds, 0.25, random_state=3)
    assert np.array_equal(a.meta["public_indices"], b.meta["public_indices"])
    # nearly all rows identical: the one distinct row and the rest still end up on different sides
    Y = np.zeros((10, 2))
    Y[7] = 1.0
    for seed in range(10):
        out = D.split_public(D.Dataset(Y, np.zeros(10), Y[:1], np.zeros(1), "regression", None), 0.9,
                             random_state=seed)
        D.public_split_of(out)
        assert out.n_train >= 1 and out.X_public.shape[0] >= 1
    with pytest.raises(ValueError, match="all identical"):
        D.split_public(D.Dataset(np.ones((5, 2)), np.zeros(5), np.ones((1, 2)), np.zeros(1),
                                 "regression", None), 0.5, random_state=0)


def test_split_public_unchanged_without_duplicates():
    """No duplicates: the split is the first m rows of the permutation (seeds keep their meaning)."""
    ds = D.make_mixture(200, 3, 2, random_state=0)
    out = D.split_public(ds, 0.1, random_state=5)
    perm = np.random.default_rng(5).permutation(ds.n_train)
    assert np.array_equal(out.meta["public_indices"], np.sort(perm[:round(0.1 * ds.n_train)]))


# ----------------------------------------------------------------------------- standardize and notes
def test_standardize_default_fits_on_public_when_present():
    ds = D.split_public(D.make_mixture(300, 4, 3, random_state=0), 0.2, shift=1.0, random_state=0)
    out = D.standardize(ds)
    mean, scale = out.meta["standardize"]
    np.testing.assert_array_equal(mean, ds.X_public.mean(axis=0))
    np.testing.assert_array_equal(scale, ds.X_public.std(axis=0))
    np.testing.assert_allclose(out.X_public.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.X_public.std(axis=0), 1)
    np.testing.assert_array_equal(out.X_train, D.standardize(ds, fit_on="public").X_train)
    assert D.private_preprocessing_notes(out) == ()
    assert D.private_preprocessing_notes(ds) == ()


def test_standardize_default_fits_on_train_without_public_and_notes_it():
    ds = D.make_mixture(120, 4, 2, random_state=1)
    out = D.standardize(ds)
    mean, scale = out.meta["standardize"]
    np.testing.assert_array_equal(mean, ds.X_train.mean(axis=0))
    np.testing.assert_array_equal(scale, ds.X_train.std(axis=0))
    note = (f"standardize: feature mean and std fitted on the {ds.n_train} private training rows; "
            "this release is not covered by epsilon")
    assert D.private_preprocessing_notes(out) == (note,)
    assert out.meta["private_preprocessing"] == (note,)
    assert D.private_preprocessing_notes(ds) == ()  # the input is not modified


def test_notes_accumulate_and_survive_split_public():
    ds = D.standardize(D.make_linear(100, 3, random_state=0))
    split = D.split_public(ds, 0.2, random_state=0)
    assert D.private_preprocessing_notes(split) == D.private_preprocessing_notes(ds)
    again = D.standardize(split, fit_on="train")
    notes = D.private_preprocessing_notes(again)
    assert len(notes) == 2 and f"the {split.n_train} private" in notes[1]
    assert isinstance(notes, tuple) and all(isinstance(n, str) for n in notes)
    public = D.standardize(again)  # fit on public: no new note, the old ones kept
    assert D.private_preprocessing_notes(public) == notes


def test_standardize_on_public_refuses_an_overlapping_public_split():
    ds = D.split_public(D.make_linear(80, 3, random_state=0), 0.25, random_state=0)
    leaky = dataclasses.replace(ds, X_public=np.vstack([ds.X_public, ds.X_train[:2]]),
                                y_public=np.concatenate([ds.y_public, ds.y_train[:2]]))
    with pytest.raises(ValueError, match=OVERLAP):
        D.standardize(leaky)
    D.standardize(leaky, fit_on="train")  # reads private rows anyway, and says so
    with pytest.raises(ValueError, match="fit_on"):
        D.standardize(ds, fit_on="test")


def test_private_preprocessing_notes_validation_and_mnist1d_note():
    with pytest.raises(ValueError, match="^ds must"):
        D.private_preprocessing_notes(None)
    for ds in (D.make_logistic(50, 2, random_state=0), D.load_digits(random_state=0)):
        assert D.private_preprocessing_notes(ds) == ()
    notes = D.private_preprocessing_notes(D.load_mnist1d(200, random_state=0))
    assert len(notes) == 1 and notes[0].startswith("load_mnist1d:") and "200" in notes[0]
    assert "not covered by epsilon" in notes[0]
