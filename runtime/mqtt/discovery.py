"""Home Assistant MQTT discovery: a prediction appears as a sensor with no configuration.

One retained config per answered topic under ``<prefix>/sensor/<node>/<object>/config``
(https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery). The sensor's state is
the result's top label (or the latency when the result has no label); the whole result is
its attributes; availability follows the bridge's retained status / last will.
"""
from __future__ import annotations

import re
from typing import Any


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "edgepack"


def discovery_topic(prefix: str, client_id: str, state_topic: str) -> str:
    return f"{prefix}/sensor/{_slug(client_id)}/{_slug(state_topic)}/config"


def discovery_config(client_id: str, state_topic: str, status_topic: str, model: str,
                     version: str) -> dict[str, Any]:
    """The discovery payload of the sensor for results published on `state_topic`."""
    node = _slug(client_id)
    return {
        "name": f"{model} {state_topic}",
        "unique_id": f"{node}_{_slug(state_topic)}",
        "object_id": f"edgepack_{_slug(state_topic)}",
        "state_topic": state_topic,
        "value_template": "{{ value_json.label if value_json.label is defined "
                          "else value_json.latency_ms }}",
        "json_attributes_topic": state_topic,
        "json_attributes_template": "{{ value_json.result | tojson }}",
        "availability_topic": status_topic,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "icon": "mdi:brain",
        "device": {"identifiers": [node], "name": f"edgepack {client_id}",
                   "manufacturer": "edgepack", "model": model, "sw_version": version},
        "origin": {"name": "edgepack"},
    }
