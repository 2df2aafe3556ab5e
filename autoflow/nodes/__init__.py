"""The built-in node library: the seed's node types as ordinary ``@af.node`` functions.

Registered in :func:`~autoflow.define.registry.builtin_registry` under the seed's type
names, so a JSON definition ``{"type": "http_request", "config": {...}}`` runs on any
worker without importing user code; importable in Python::

    from autoflow.nodes import http_request, condition_if

    @af.workflow
    def sync(url: str):
        return save(http_request(url, response="full"))

* triggers: ``manual_trigger``, ``webhook_trigger``, ``schedule_trigger``, ``database_trigger``
* actions: ``http_request``, ``send_email``, ``database_save``, ``whatsapp_send``, ``payment_process``
* conditions: ``condition_if``, ``switch``, ``validation``, ``error_handler``, ``retry``
* utilities: ``delay`` (``af.delay``), ``data_transform``, ``clone``, ``logger``
  ``code_execution`` (sandboxed Python; see docs/nodes-code.md)
* custom processors: :func:`register_processor`

Secrets are taken by credential name (:class:`~autoflow.context.Credentials`), never
written in definitions. See docs/nodes.md.
"""

from autoflow.context import CredentialError, Credentials
from autoflow.define.delay import delay
from autoflow.nodes.base import MissingExtra, NodeError
from autoflow.nodes.code import code_execution
from autoflow.nodes.conditions import Case, Rule, condition_if, error_handler, retry, switch, validation
from autoflow.nodes.database import database_save
from autoflow.nodes.http import Auth, NetworkPolicy, Pagination, http_request
from autoflow.nodes.mail import Attachment, send_email
from autoflow.nodes.payment import payment_process
from autoflow.nodes.processors import Processor, register_processor
from autoflow.nodes.triggers import database_trigger, manual_trigger, schedule_trigger, webhook_trigger
from autoflow.nodes.utilities import Assignment, clone, data_transform, logger
from autoflow.nodes.whatsapp import Template, whatsapp_send

__all__ = [
    "Assignment",
    "Attachment",
    "Auth",
    "Case",
    "CredentialError",
    "Credentials",
    "MissingExtra",
    "NetworkPolicy",
    "NodeError",
    "Pagination",
    "Processor",
    "Rule",
    "Template",
    "clone",
    "code_execution",
    "condition_if",
    "data_transform",
    "database_save",
    "database_trigger",
    "delay",
    "error_handler",
    "http_request",
    "logger",
    "manual_trigger",
    "payment_process",
    "register_processor",
    "retry",
    "schedule_trigger",
    "send_email",
    "switch",
    "validation",
    "webhook_trigger",
    "whatsapp_send",
]
