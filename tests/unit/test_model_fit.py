"""gan.core.model_fit: the model's channels, size and conditioning come from the dataset
version; an explicit choice the data contradicts is refused, naming both."""

from __future__ import annotations

import pytest

from flows import params as P
from gan.core.config import ModelConfig, RetrainParams
from gan.core.model_fit import fit_model_to_data
from gan.core.records import DatasetRef


def ref(**over) -> DatasetRef:
    base = {"name": "shapes", "version": "abc123", "uri": "s3://b/datasets/shapes/abc123/",
            "source": "images", "n_train": 80, "n_holdout": 20, "num_classes": 4,
            "image_size": 32, "channels": 3, "labelled": True}
    return DatasetRef(**{**base, **over})


def test_channels_size_and_classes_come_from_the_data() -> None:
    _, model, _, _ = RetrainParams().resolve()  # default preset: conditional dcgan, 1×28²
    fitted = fit_model_to_data(model, ref())
    assert (fitted.channels, fitted.image_size, fitted.conditional, fitted.num_classes) == (
        3, 32, True, 4)
    assert fitted.arch == model.arch and fitted.base_channels == model.base_channels


def test_digits_default_recipe_is_unchanged() -> None:
    """The bundled digits (1×28², 10 classes) keep exactly the resolved model config, so the
    champion's lineage ("nothing changed") and the pinned recipes stay as they were."""
    for preset in ("default", "seed", "smoke"):
        _, model, _, _ = RetrainParams(preset=preset).resolve()
        digits = ref(name="digits", source="digits", num_classes=10, image_size=28, channels=1)
        assert fit_model_to_data(model, digits) == model


def test_unlabelled_data_gets_the_unconditional_model() -> None:
    _, model, _, _ = RetrainParams().resolve()
    assert model.conditional
    fitted = fit_model_to_data(model, ref(labelled=False, num_classes=1))
    assert not fitted.conditional and fitted.channels == 3


def test_explicit_conditional_on_unlabelled_data_is_refused() -> None:
    params = P.params_from_options(conditional=True, source="images", uri="/x", image_size=32)
    _, model, _, _ = params.resolve()
    with pytest.raises(ValueError) as e:
        fit_model_to_data(model, ref(labelled=False, num_classes=1),
                          P.explicit_model_fields(params))
    assert "model.conditional=True but dataset shapes@abc123 is unlabelled" in str(e.value)
    assert "drop --conditional" in str(e.value)
    # --unconditional on labelled data is a choice the data allows: kept.
    params = P.params_from_options(conditional=False)
    _, model, _, _ = params.resolve()
    assert not fit_model_to_data(model, ref(), P.explicit_model_fields(params)).conditional


def test_explicit_shape_against_the_data_is_refused_and_arch_limits_apply() -> None:
    with pytest.raises(ValueError, match=r"model.channels=1 but dataset shapes@abc123 has "
                                         r"3-channel images"):
        fit_model_to_data(ModelConfig(channels=1), ref(), explicit={"channels"})
    with pytest.raises(ValueError, match="16, 32, 64 or 128 for resnet"):
        fit_model_to_data(ModelConfig(arch="resnet", image_size=32), ref(image_size=28))
    with pytest.raises(ValueError, match="unknown model fields"):
        fit_model_to_data(ModelConfig(), ref(), explicit={"colour"})


def test_resolve_takes_channels_from_data_channels() -> None:
    params = P.params_from_options(channels=3, image_size=32, arch="resnet")
    _, model, _, _ = params.resolve()
    assert (model.channels, model.image_size, model.arch) == (3, 32, "resnet")
