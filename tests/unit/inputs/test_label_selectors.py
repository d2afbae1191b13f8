"""Label selectors (machineconfig.labels): Kubernetes' LabelSelectorAsSelector semantics, Go's
String() form, malformed selectors refused with the field that is wrong, and the one-label fast
path of `match_all` equal to `matches`."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machineconfig import labels
from machineconfig.api import LabelSelector

NODE = {"node-role.kubernetes.io/worker": "", "tier": "a", "zone": "z1"}


def typed(raw: dict[str, Any]) -> LabelSelector:
    return LabelSelector.model_validate(raw)


@pytest.mark.parametrize(("raw", "matched"), [
    ({"matchLabels": {"node-role.kubernetes.io/worker": ""}}, True),
    ({"matchLabels": {"tier": "b"}}, False),
    ({"matchLabels": {"tier": "a", "zone": "z2"}}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]}, True),
    ({"matchExpressions": [{"key": "missing", "operator": "In", "values": ["a"]}]}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, False),
    # NotIn and DoesNotExist are satisfied by a missing key
    ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["a"]}]}, True),
    ({"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
    ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, True),
    ({"matchLabels": {"tier": "a"},
      "matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z1"]}]}, False),
    ({}, True),  # no requirements: everything (where a caller allows it)
])
def test_matches(raw: dict[str, Any], matched: bool) -> None:
    assert labels.matches(typed(raw), NODE) is matched


def test_nil_selects_nothing_and_pools_never_select_with_an_empty_selector() -> None:
    assert labels.matches(None, NODE) is False
    assert labels.compile_raw(None) is None
    assert labels.compile_raw({}) is None
    assert labels.compile_raw({"matchLabels": {}, "matchExpressions": []}) is None
    assert labels.pool_selects({"spec": {"nodeSelector": {}}}, NODE) is False
    assert labels.pool_selects({"spec": {}}, NODE) is False


def test_describe_is_gos_string_form_sorted_by_key() -> None:
    raw = {"matchLabels": {"zone": "z1"},
           "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["b", "a", "a"]},
                                {"key": "app", "operator": "In", "values": ["web"]},
                                {"key": "gpu", "operator": "Exists"},
                                {"key": "old", "operator": "DoesNotExist"}]}
    assert labels.describe(typed(raw)) == "app in (web),gpu,!old,tier notin (a,b),zone=z1"
    assert labels.describe(None) == ""


@pytest.mark.parametrize(("raw", "field"), [
    ({"matchExpressions": [{"key": "a", "operator": "Like"}]}, "matchExpressions.0.operator"),
    # a string is not a list of values (once matched "a" as a substring of "abc")
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": "abc"}]}, "matchExpressions.0.values"),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}, "matchExpressions.0.values.0"),
    ({"matchLabels": "tier=a"}, "matchLabels"),
    ({"matchLabels": {"tier": 1}}, "matchLabels.tier"),
    ({"matchExpressions": ["a"]}, "matchExpressions.0"),
])
def test_malformed_selectors_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(labels.SelectorError) as e:
        labels.compile_raw(raw)
    assert str(e.value).startswith(f"invalid label selector: {field}: ")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("raw", [["matchLabels"], "tier=a", 3])
def test_a_selector_that_is_not_a_mapping_is_refused(raw: Any) -> None:
    with pytest.raises(labels.SelectorError, match="must be a mapping"):
        labels.compile_raw(raw)


@pytest.mark.parametrize(("raw", "message"), [
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "values set can't be empty"),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn"}]}, "values set can't be empty"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
     "values set must be empty for exists and does not exist"),
])
def test_requirements_kubernetes_refuses(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(labels.SelectorError, match=message):
        labels.compile_raw(raw)
    with pytest.raises(labels.SelectorError, match=message):
        labels.matches(typed(raw), NODE)


def test_a_malformed_pool_selector_selects_no_node() -> None:
    pool = {"metadata": {"name": "odd"},
            "spec": {"nodeSelector": {"matchExpressions": [{"key": "gpu", "operator": "Foo"}]}}}
    assert labels.pool_selector(pool) is None
    assert labels.pool_selects(pool, {}) is False


KEYS = st.sampled_from(["a", "b", "node-role.kubernetes.io/worker"])
VALUES = st.sampled_from(["", "1", "2"])
EXPRESSION = st.one_of(
    st.fixed_dictionaries({"key": KEYS, "operator": st.sampled_from(["In", "NotIn"]),
                           "values": st.lists(VALUES, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"key": KEYS, "operator": st.sampled_from(["Exists", "DoesNotExist"])}))
SELECTOR = st.fixed_dictionaries({}, optional={"matchLabels": st.dictionaries(KEYS, VALUES, max_size=2),
                                               "matchExpressions": st.lists(EXPRESSION, max_size=3)})
LABEL_SETS = st.lists(st.dictionaries(KEYS, VALUES, max_size=3), max_size=6)


@settings(max_examples=300, deadline=None)
@given(SELECTOR, LABEL_SETS)
def test_match_all_equals_matches_and_the_requirement_semantics(raw: dict[str, Any],
                                                               label_sets: list[dict[str, str]]) -> None:
    selector = labels.compile(typed(raw))
    expected = []
    for node in label_sets:  # the selector's meaning, written out requirement by requirement
        ok = all(node.get(k) == v for k, v in (raw.get("matchLabels") or {}).items())
        for expr in raw.get("matchExpressions") or []:
            key, op, values = expr["key"], expr["operator"], expr.get("values") or []
            ok = ok and {"In": key in node and node[key] in values,
                         "NotIn": key not in node or node[key] not in values,
                         "Exists": key in node, "DoesNotExist": key not in node}[op]
        expected.append(ok)
    assert selector.match_all(label_sets) == expected
    assert [selector.matches(node) for node in label_sets] == expected


@pytest.mark.parametrize(("raw", "start"), [
    ({"matchLabels": {"bad key": "x"}}, "invalid label selector: key 'bad key': its name must be"),
    ({"matchLabels": {"Example.com/role": "x"}}, "invalid label selector: key 'Example.com/role': its prefix"),
    ({"matchLabels": {"a/b/c": "x"}}, "invalid label selector: key 'a/b/c': its prefix"),
    ({"matchLabels": {"role": "-worker"}}, "invalid label selector: role: value '-worker': must be"),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "x" * 64]}]},
     "invalid label selector: tier: value 'xxxx"),
    ({"matchExpressions": [{"key": "", "operator": "Exists"}]}, "invalid label selector: key '': its name"),
])
def test_keys_and_values_must_be_label_syntax(raw: dict[str, Any], start: str) -> None:
    with pytest.raises(labels.SelectorError) as e:
        labels.compile_raw(raw)
    assert str(e.value).startswith(start)


def test_label_syntax_that_kubernetes_accepts() -> None:
    raw = {"matchLabels": {"node-role.kubernetes.io/worker": "", "pools.operator.machineconfiguration"
                           ".openshift.io/infra": "", "a_b.c-d": "V1.2_x"},
           "matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In",
                                 "values": ["us-east-1a", "x" * 63]}]}
    assert labels.compile_raw(raw) is not None
