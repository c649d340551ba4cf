import itertools

import numpy as np
import pytest

from erasekit.models.embedded import TOKENIZER_MAX_LENGTH, load_tokenizer
from erasekit.world import vocabulary as V
from erasekit.world.captions import describe, sample_scene
from erasekit.world.dataset import label_indices, render_dataset
from erasekit.world.render import Scene, render, shape_mask


def test_vocabulary_sizes_and_uniqueness():
    assert len(V.SHAPES) == 10 and all(len(V.SYNONYMS[s]) == 3 for s in V.SHAPES)
    assert len(V.ARTISTS) == 6 and len(V.NAMED_CHARACTERS) == 6
    assert len(V.ROSTER_NAMES) >= 40
    V.check_unique()
    # no synonym or association belongs to two shapes
    terms = [t for s in V.SHAPES for t in (s, *V.SYNONYMS[s], V.SHAPE_ASSOCIATIONS[s])]
    assert len(terms) == len(set(terms))


def test_character_looks_differ_in_two_attributes():
    looks = [(c.body_color, c.hat_style, c.hat_color) for c in V.CHARACTERS]
    for a, b in itertools.combinations(looks, 2):
        assert sum(x != y for x, y in zip(a, b, strict=False)) >= 2, (a, b)


def test_pairs_sharing_a_first_word_exist():
    first = [n.split()[0] for n in V.NAMED_CHARACTERS]
    assert first.count("Captain") == 2 and first.count("Doctor") == 2


def test_render_is_deterministic_and_labelled():
    scene = Scene(shape="star", color="red", artist="Lise Moreau", flames=True)
    a, mask_a = render(scene, np.random.default_rng(3))
    b, mask_b = render(scene, np.random.default_rng(3))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b)
    assert 0.05 < mask_a.mean() < 0.6


@pytest.mark.parametrize("shape", V.SHAPES)
def test_every_shape_draws_a_distinct_mask(shape):
    mask = np.asarray(shape_mask(shape, 64, 64, 38)) > 0
    assert mask.mean() > 0.08
    for other in V.SHAPES:
        if other != shape:
            assert (mask != (np.asarray(shape_mask(other, 64, 64, 38)) > 0)).mean() > 0.02, other


def test_unknown_shape_is_refused():
    with pytest.raises(ValueError, match="unknown shape"):
        shape_mask("pentagon", 64, 64, 30)


def test_captions_cover_the_vocabulary_and_fit_the_tokenizer():
    rng = np.random.default_rng(0)
    tokenizer = load_tokenizer()
    captions = [describe(sample_scene(rng), rng).caption for _ in range(6000)]
    text = "\n".join(captions)
    for shape in V.SHAPES:
        for term in (shape, *V.SYNONYMS[shape], V.SHAPE_ASSOCIATIONS[shape]):
            assert term in text, term
    for artist in V.ARTISTS:
        assert artist.name in text and artist.association in text
    for character in V.CHARACTERS:
        assert character.name in text
        if character.association:
            assert character.association in text
    for phrase in (*V.FLAME_EXPLICIT, *V.FLAME_IMPLICIT):
        assert phrase in text
    longest = max(len(tokenizer(c).input_ids) for c in captions)
    assert longest <= TOKENIZER_MAX_LENGTH


def test_dataset_is_reproducible_slice_by_slice():
    a = render_dataset(12, seed=5, workers=1)
    b = render_dataset(12, seed=5, workers=2)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert len(set(a.captions)) > 6


def test_label_indices_use_none_classes():
    s, a, c, f = label_indices(Scene(character="Mira Sol"))
    assert V.SHAPE_LABELS[s] == V.NONE and V.ARTIST_LABELS[a] == V.NONE
    assert V.CHARACTER_LABELS[c] == "Mira Sol" and f == 0


def test_dataset_labels_include_term_colour_and_mask(tmp_path):
    from erasekit.world.dataset import cached_dataset

    data = cached_dataset(tmp_path, 40, seed=9)
    again = cached_dataset(tmp_path, 40, seed=9)  # read back from the cache
    assert again.terms == data.terms and again.colors == data.colors
    assert np.array_equal(again.masks, data.masks)
    for caption, term, shape in zip(data.captions, data.terms, data.shape, strict=True):
        if term:
            assert term in caption and V.shape_of_term(term) == V.SHAPE_LABELS[shape]
    assert set(data.colors) <= set(V.COLORS)
