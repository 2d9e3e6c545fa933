"""MQTT topic filters with wildcards, mapped into publish topics.

``cameras/+/frame`` -> ``cameras/{1}/detections``: ``{N}`` is the level the N-th wildcard
matched (``#`` matches the rest of the topic, ``a/b`` included). A shared subscription
``$share/GROUP/filter`` matches like ``filter``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import MqttError

_PLACEHOLDER = re.compile(r"\{(\d+)\}")


def strip_share(topic_filter: str) -> str:
    """The filter of a shared subscription (``$share/group/a/+`` -> ``a/+``)."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) < 3 or not parts[1] or not parts[2]:
            raise MqttError(f"shared subscription {topic_filter!r} must look like "
                            "$share/GROUP/topic/filter")
        return parts[2]
    return topic_filter


def check_filter(topic_filter: str) -> int:
    """Validate a subscription filter; returns how many wildcards it holds."""
    plain = strip_share(topic_filter)
    if not plain:
        raise MqttError("a subscription topic may not be empty")
    levels = plain.split("/")
    count = 0
    for i, level in enumerate(levels):
        if level in ("+", "#"):
            count += 1
            if level == "#" and i != len(levels) - 1:
                raise MqttError(f"topic filter {topic_filter!r}: '#' must be the last level")
        elif "+" in level or "#" in level:
            raise MqttError(f"topic filter {topic_filter!r}: a wildcard must fill a whole "
                            f"level (got {level!r})")
    return count


def check_template(template: str, wildcards: int, what: str = "publish topic") -> None:
    """A publish topic may not hold wildcards; {N} must name one of the filter's wildcards."""
    if not template:
        raise MqttError(f"the {what} may not be empty")
    if "+" in template or "#" in template:
        raise MqttError(f"{what} {template!r} holds a wildcard; use {{1}}, {{2}}, ... for "
                        "the levels the subscription's wildcards matched")
    for match in _PLACEHOLDER.finditer(template):
        n = int(match.group(1))
        if not 1 <= n <= wildcards:
            raise MqttError(f"{what} {template!r} uses {{{n}}} but the subscription has "
                            f"{wildcards} wildcard(s)")
    leftover = _PLACEHOLDER.sub("", template)
    if "{" in leftover or "}" in leftover:
        raise MqttError(f"{what} {template!r}: only {{N}} placeholders are understood")


@dataclass(frozen=True)
class TopicMap:
    """One subscription filter and the publish-topic template its messages answer on."""

    topic_filter: str
    template: str

    def __post_init__(self) -> None:
        check_template(self.template, check_filter(self.topic_filter))
        # Split once: match() runs in paho's network thread for every message.
        object.__setattr__(self, "_levels", tuple(strip_share(self.topic_filter).split("/")))

    @property
    def is_static(self) -> bool:
        """True when every message answers on the same topic (no {N} placeholder)."""
        return _PLACEHOLDER.search(self.template) is None

    def match(self, topic: str) -> tuple[str, ...] | None:
        """The levels matched by each wildcard, or None when `topic` does not match."""
        pattern = self._levels
        levels = topic.split("/")
        captured: list[str] = []
        for i, want in enumerate(pattern):
            if want == "#":
                # '#' also matches the parent level itself ('a/#' matches 'a').
                captured.append("/".join(levels[i:]))
                return tuple(captured)
            if i >= len(levels):
                return None
            if want == "+":
                captured.append(levels[i])
            elif want != levels[i]:
                return None
        return tuple(captured) if len(levels) == len(pattern) else None

    def publish_topic(self, topic: str) -> str:
        """The topic to answer a message received on `topic` on."""
        captured = self.match(topic)
        if captured is None:
            raise MqttError(f"topic {topic!r} does not match {self.topic_filter!r}")
        return _PLACEHOLDER.sub(lambda m: captured[int(m.group(1)) - 1], self.template)
