"""Custom processors: register_processor with a pydantic config model."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, field_validator

import autoflow as af
from autoflow.nodes import register_processor


class Greeting(BaseModel):
    greeting: str
    times: int = 1

    @field_validator("greeting")
    @classmethod
    def _no_shouting(cls, value: str) -> str:
        if value.isupper():
            raise ValueError("no shouting")
        return value


def greet(config: Greeting, data: Any) -> dict[str, Any]:
    if data == "nobody":
        return {"success": False, "error": "nobody to greet"}
    return {"success": True, "data": " ".join([f"{config.greeting} {data}"] * config.times)}


GREET = register_processor("test_greet", greet, Greeting, validate=lambda c: c.times <= 3, retries=0)


def _wf(config: dict[str, Any]) -> af.Workflow:
    return af.Workflow.from_dict(
        {
            "name": "greeting",
            "inputs": {"who": {"type": "string"}},
            "nodes": [{"id": "g", "type": "test_greet", "config": {**config, "data": {"$input": "who"}}}],
            "edges": [],
            "output": "g",
        }
    )


def test_a_processor_runs_from_json(run_client: af.Client) -> None:
    assert run_client.execute(_wf({"greeting": "hi", "times": 2}), who="Ana").result(timeout=30) == "hi Ana hi Ana"
    info = run_client.execute(_wf({"greeting": "hi"}), who="nobody").wait(timeout=30)
    assert info.status is af.RunStatus.FAILED and "nobody to greet" in info.nodes["g"].error.message


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"greeting": "HI"}, "no shouting"),
        ({"greeting": "hi", "times": "x"}, "times"),
        ({"greeting": "hi", "times": 9}, "validate"),
        ({}, "greeting"),
        ({"greeting": "hi", "colour": "red"}, "colour"),
    ],
)
def test_config_is_validated_when_the_definition_is_built(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(af.WorkflowError, match=fragment):
        _wf(config)


def test_a_processor_is_an_ordinary_node() -> None:
    assert GREET.key == "test_greet" and GREET.config_model is Greeting
    assert GREET(greeting="hey", data="Bo") == "hey Bo"
    with pytest.raises(TypeError, match="pydantic model"):
        register_processor("bad", greet, dict)  # type: ignore[arg-type]
