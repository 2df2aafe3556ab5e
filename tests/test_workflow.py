"""Defining nodes and workflows: decorators, graphs, validation, (de)serialisation."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

import networkx as nx
import pytest

import autoflow as af
from autoflow.define.building import NodeRef
from autoflow.define.definition import parse_definition
from autoflow.templates import resolve_template

ROOT = Path(__file__).resolve().parent.parent


@af.node
def fetch(url: str) -> dict[str, str]:
    return {"url": url}


@af.node(retries=5, backoff=af.Backoff(base=0.5), timeout=3.0, priority=2, name="parse_doc")
def parse(doc: dict[str, str], limit: int = 10) -> list[str]:
    return list(doc.values())[:limit]


@af.node
def merge(*parts: list[str]) -> list[str]:
    return [p for part in parts for p in part]


@af.node
def count(items: list[str], ctx: af.Context) -> int:
    ctx.log.info("counting")
    return len(items)


@af.node
def takes_int(n: int) -> int:
    return n


@af.node
def maybe(n: Optional[int] = None) -> int:  # noqa: UP045  (the old spelling must work too)
    return n or 0


@af.workflow
def etl(url: str, limit: int = 10):
    """Fetch twice, parse, merge."""
    a = parse(fetch(url), limit)
    b = parse(fetch(url))
    return merge(a, b)


def test_a_node_is_a_plain_function_outside_workflows() -> None:
    assert fetch("x") == {"url": "x"}
    assert parse({"a": "1", "b": "2"}, limit=1) == ["1"]
    assert count(["a", "b"]) == 2  # ctx made up for the call
    assert count(["a"], ctx=af.Context.local("count")) == 1
    assert fetch.__name__ == "fetch" and fetch.__doc__ is None
    assert fetch.key == "tests.test_workflow:fetch" and parse.key == "parse_doc"


def test_options_live_in_one_place() -> None:
    assert parse.options.retries == 5 and parse.options.max_attempts == 6
    assert parse.options.timeout == 3.0 and parse.options.priority == 2
    faster = parse.with_options(retries=0)
    assert faster.options.retries == 0 and faster.key == parse.key and parse.options.retries == 5
    assert fetch.options == af.NodeOptions()
    with pytest.raises(TypeError, match="with_options"):
        parse.with_options(bogus=1)


def test_decorating_twice_or_with_bad_options_fails() -> None:
    with pytest.raises(TypeError, match="already an autoflow node"):
        af.node(fetch)

    def f() -> None: ...

    with pytest.raises(af.WorkflowError, match="node 'f': retries"):
        af.node(retries=-1)(f)
    with pytest.raises(af.WorkflowError, match="node 'f': timeout"):
        af.node(timeout=0)(f)
    with pytest.raises(TypeError, match="unexpected keyword"):
        af.node(retry=3)  # type: ignore[call-overload]


def test_backoff_grows_caps_and_jitters() -> None:
    b = af.Backoff(base=1.0, factor=2.0, max=5.0, jitter=False)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    j = af.Backoff(base=4.0, jitter=True)
    assert j.delay(1, rand=lambda: 0.0) == 2.0 and j.delay(1, rand=lambda: 1.0) == 4.0
    with pytest.raises(af.WorkflowError):
        af.Backoff(base=-1)


def test_graph_has_one_vertex_per_call_and_data_edges() -> None:
    g = etl.graph
    assert isinstance(g, nx.DiGraph)
    assert list(g.nodes) == ["fetch", "parse_doc", "fetch_2", "parse_doc_2", "merge"]
    assert set(g.edges) == {
        ("fetch", "parse_doc"),
        ("fetch_2", "parse_doc_2"),
        ("parse_doc", "merge"),
        ("parse_doc_2", "merge"),
    }
    assert g.nodes["parse_doc"]["type"] == "parse_doc"
    assert g.edges["fetch", "parse_doc"]["input"] == "doc"
    assert etl.description == "Fetch twice, parse, merge."
    etl.validate()


def test_to_dict_is_json_and_round_trips() -> None:
    d = etl.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["name"] == "etl" and d["version"] == 1 and d["output"] == "merge"
    assert d["inputs"]["url"] == {"type": "string"}
    assert d["inputs"]["limit"] == {"type": "integer", "default": 10}
    node = {n["id"]: n for n in d["nodes"]}["parse_doc"]
    assert node["config"] == {"limit": {"$input": "limit"}}
    assert node["options"] == {
        "retries": 5,
        "backoff": {"base": 0.5, "factor": 2.0, "max": 60.0, "jitter": True},
        "timeout": 3.0,
        "priority": 2,
    }
    assert {"source": "parse_doc", "target": "merge", "input": "parts", "index": 0} in d["edges"]
    again = af.Workflow.from_dict(d)
    assert again.to_dict() == d and again.digest == etl.digest
    assert nx.utils.graphs_equal(again.graph, etl.graph)


def test_inputs_are_validated_with_defaults() -> None:
    assert etl.validate_inputs({"url": "u"}) == {"url": "u", "limit": 10}
    assert etl.validate_inputs({"url": "u", "limit": "7"}) == {"url": "u", "limit": 7}
    with pytest.raises(af.InputError, match="input 'limit'"):
        etl.validate_inputs({"url": "u", "limit": "many"})


def test_from_dict_inputs_use_their_json_schema() -> None:
    d = etl.to_dict()
    again = af.Workflow.from_dict(d)
    with pytest.raises(af.InputError, match="expected integer, got str"):
        again.validate_inputs({"url": "u", "limit": "many"})
    with pytest.raises(af.InputError, match="missing required input 'url'"):
        again.validate_inputs({})


def test_references_refuse_python_control_flow() -> None:
    with pytest.raises(af.WorkflowError, match="when=ref"):

        @af.workflow
        def branchy(url: str):
            doc = fetch(url)
            if doc:
                return doc
            return None

    with pytest.raises(af.WorkflowError, match="iterate"):

        @af.workflow
        def loopy(url: str):
            return [parse(x) for x in fetch(url)]

    with pytest.raises(af.WorkflowError, match="index"):

        @af.workflow
        def indexing(url: str):
            return takes_int(fetch(url)["n"])


def test_wiring_errors_name_the_node_and_parameter() -> None:
    with pytest.raises(af.WorkflowError, match=r"node 'fetch'.*missing a required argument: 'url'"):

        @af.workflow
        def missing():
            return fetch()

    with pytest.raises(af.WorkflowError, match=r"node 'takes_int', argument 'n': node 'fetch' returns dict"):

        @af.workflow
        def wrong_type(url: str):
            return takes_int(fetch(url))

    with pytest.raises(af.WorkflowError, match=r"input 'url' is str but the parameter expects int"):

        @af.workflow
        def wrong_input(url: str):
            return takes_int(url)

    with pytest.raises(af.WorkflowError, match="cannot be stored as JSON"):

        @af.workflow
        def bad_constant():
            return takes_int(object())

    with pytest.raises(af.WorkflowError, match="calls no node"):

        @af.workflow
        def empty(x: int):
            return x

    with pytest.raises(af.WorkflowError, match="reserved"):

        @af.workflow
        def reserved(priority: int):
            return takes_int(priority)

    with pytest.raises(af.WorkflowError, match="nested more than one level"):

        @af.workflow
        def nested(url: str):
            return merge([[fetch(url)]])

    with pytest.raises(af.WorkflowError, match="do not pass 'ctx'"):

        @af.workflow
        def passes_ctx():
            return count([], ctx=af.Context.local("x"))


def test_optional_and_compatible_types_are_accepted() -> None:
    @af.workflow
    def ok(n: int):
        return maybe(takes_int(n))

    assert list(ok.graph.edges) == [("takes_int", "maybe")]


def test_from_dict_detects_cycles_and_bad_wiring() -> None:
    d = etl.to_dict()
    d["edges"].append({"source": "merge", "target": "fetch", "input": "url"})
    with pytest.raises(af.WorkflowError, match=r"has a cycle: fetch -> parse_doc -> merge$"):
        af.Workflow.from_dict(d)
    d = etl.to_dict()
    d["edges"].append({"source": "ghost", "target": "merge", "input": "parts"})
    with pytest.raises(af.WorkflowError, match="unknown source node 'ghost'"):
        af.Workflow.from_dict(d)
    d = etl.to_dict()
    d["nodes"][0]["type"] = "no.such:node"
    with pytest.raises(af.NotFoundError, match=r"node type 'no.such:node' is not registered"):
        af.Workflow.from_dict(d)
    d = etl.to_dict()
    d["nodes"][0]["config"] = {}
    with pytest.raises(af.WorkflowError, match=r"node 'fetch' .* missing argument\(s\) \['url'\]"):
        af.Workflow.from_dict(d)
    d = etl.to_dict()
    d["nodes"][1]["options"] = {"retries": "many"}
    with pytest.raises(af.WorkflowError, match="retries"):
        af.Workflow.from_dict(d)
    with pytest.raises(af.WorkflowError, match="non-empty list"):
        af.Workflow.from_dict({"name": "x", "nodes": []})
    with pytest.raises(af.WorkflowError, match="duplicate node id"):
        af.Workflow.from_dict({"name": "x", "nodes": [{"id": "a", "type": "t"}, {"id": "a", "type": "t"}]})


def test_registry_replaces_same_module_and_refuses_clashes() -> None:
    reg = af.Registry()

    def one() -> int:
        return 1

    first = af.node(name="shared", registry=reg)(one)

    def one_again() -> int:
        return 2

    second = af.node(name="shared", registry=reg)(one_again)  # a re-run notebook cell
    assert reg.node("shared") is second and first is not second

    def other() -> int:
        return 3

    other.__module__ = "somewhere.else"
    with pytest.raises(af.WorkflowError, match="already used by"):
        af.node(name="shared", registry=reg)(other)
    with pytest.raises(af.NotFoundError, match=r"autoflow worker pkg\.mod"):
        reg.node("pkg.mod:fn")


def test_workflow_object_is_not_callable_directly() -> None:
    with pytest.raises(TypeError, match="execute"):
        etl(url="x")


def test_schedule_must_be_cron() -> None:
    with pytest.raises(af.WorkflowError, match="cron"):

        @af.workflow(schedule="every minute")
        def scheduled(url: str):
            return fetch(url)

    @af.workflow(name="every5", schedule="*/5 * * * *")
    def fine(url: str):
        return fetch(url)

    assert fine.name == "every5" and fine.to_dict()["schedule"] == "*/5 * * * *"


def test_templates_resolve_markers() -> None:
    tpl = {"a": {"$ref": "n1"}, "b": [{"$input": "x"}, 3], "c": {"k": {"$ref": "n2"}}}
    assert resolve_template(tpl, {"n1": 1, "n2": [2]}, {"x": "X"}) == {"a": 1, "b": ["X", 3], "c": {"k": [2]}}
    specs, output = parse_definition(etl.to_dict())
    assert specs["merge"].parents == ("parse_doc", "parse_doc_2") and output == "merge"


def test_refs_are_visible_in_the_builder() -> None:
    seen: list[object] = []

    @af.workflow
    def peek(url: str):
        ref = fetch(url)
        seen.append(ref)
        return ref

    (ref,) = seen
    assert isinstance(ref, NodeRef) and ref.node_id == "fetch"


def test_async_node_called_directly_returns_a_coroutine() -> None:
    @af.node
    async def later(x: int) -> int:
        return x + 1

    assert asyncio.run(later(1)) == 2
    assert later.is_async


def test_defining_and_running_workflows_needs_no_networkx() -> None:
    """Workers define workflows and run nodes without importing networkx (~7 MiB of
    every worker): only drawing a graph or asking for ``.graph`` imports it."""
    code = (
        "import sys, autoflow as af\n"
        "from autoflow.engine.worker import Worker\n"
        "from tests.server.flows import api_flow\n"
        "assert 'networkx' not in sys.modules, 'imported by defining workflows'\n"
        "assert repr(api_flow).endswith('nodes=2 edges=1>'), repr(api_flow)\n"
        "assert api_flow.graph.number_of_edges() == 1 and 'networkx' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
