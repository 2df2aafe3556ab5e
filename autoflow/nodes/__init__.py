"""The built-in node library: ordinary ``@af.node`` functions registered under the seed's
type names in :func:`autoflow.define.registry.builtin_registry`, so a JSON definition
naming them runs on any worker.

Example::

    from autoflow.nodes import code_execution

    @af.workflow
    def doubled(x: int):
        return code_execution(code="result = data * 2", data=x)
"""

from autoflow.nodes.code import code_execution

__all__ = ["code_execution"]
