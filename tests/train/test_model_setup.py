"""Model building of the train command: classifier replacement and default settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from train_helpers import MODEL

import zoo
from zoo.train.model_setup import default_in_chans, replace_classifier
from zoo.train.optim import default_lr, default_weight_decay


def _nested_net() -> nn.Module:
    """No ``reset_classifier``: the classifier is a Linear two levels down."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Sequential(nn.Dropout(0.0), nn.Linear(4, 10)),
    )


def test_replace_classifier_by_dotted_name():
    torch.manual_seed(0)
    model = _nested_net()
    conv, old = model[0], model[3][1]
    replace_classifier(model, 3)
    new = model.get_submodule("3.1")
    assert isinstance(new, nn.Linear) and new is not old
    assert (new.in_features, new.out_features) == (4, 3)
    assert model[0] is conv  # the rest of the model is untouched
    x = torch.randn(2, 1, 8, 8)
    feats = model[2](model[1](model[0](x)))
    torch.testing.assert_close(model(x), feats @ new.weight.T + new.bias)


def test_replace_classifier_top_level_linear():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    replace_classifier(model, 7)
    assert model[1].out_features == 7 and model(torch.zeros(1, 1, 4, 4)).shape == (1, 7)


def test_replace_classifier_uses_reset_classifier():
    model = zoo.create(MODEL, num_classes=10, in_chans=1)
    replace_classifier(model, 4)
    assert model.get_classifier().out_features == 4
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 4)


def test_replace_classifier_without_linear_fails():
    with pytest.raises(ValueError, match="cannot find a classifier"):
        replace_classifier(nn.Sequential(nn.Conv2d(1, 2, 1)), 3)


def test_default_in_chans():
    assert default_in_chans(MODEL) == 3  # ImageNet models take RGB
    assert default_in_chans("tiny_models:tiny_net") == 3
    with pytest.raises(Exception, match="(?i)unknown model"):
        default_in_chans("no_such_net")


def test_documented_optimizer_defaults():
    # The values --lr and --weight-decay's help texts promise.
    assert default_lr("sgd", finetune=False) == 0.1
    assert default_lr("sgd", finetune=True) == 0.01
    assert default_lr("adamw", finetune=False) == default_lr("adamw", finetune=True) == 1e-3
    assert default_weight_decay("sgd") == 1e-4 and default_weight_decay("adamw") == 0.05
