"""The same kind of tests against one mailfault steered over HTTP: each
test PUTs its own scenario (own port, own counters) and waits for what
arrived with one request (run by `cargo test --test ci_python`; see
docs/ci.md)."""

import pytest

from conftest import ApiError
from test_example import send_order_mail


def test_http_a_deferred_mail_is_retried_and_delivered(scenario):
    sc = scenario("""
        [[rule]]
        on = "rcpt"
        reply = "451 4.3.0 Try again later"
        times = 2
    """)
    assert send_order_mail(sc.host, sc.port, "ann@example.test") == [451, 451, 250]
    m = sc.api.wait_for_message(rcpt="ann@example.test")
    assert m["mail_from"] == "shop@example.test"
    assert m["scenario"] == sc.name
    deliveries = [d for d in sc.api.report()["deliveries"] if d["rcpt"] == "ann@example.test"]
    assert [a["code"] for a in deliveries[0]["attempts"]] == [451, 451, 250]


def test_http_make_the_next_3_messages_to_x_fail(scenario):
    sc = scenario("")
    sc.api.prepend_rule(sc.name, {
        "on": "rcpt", "when": {"rcpt": "x@*"},
        "reply": "450 4.2.0 Try again later", "times": 3,
    })
    assert send_order_mail(sc.host, sc.port, "x@example.test", tries=4) == [450, 450, 450, 250]
    assert sc.api.wait_for_message(rcpt="x@example.test")["rcpts"] == ["x@example.test"]


def test_http_a_bad_scenario_says_every_line(scenario):
    with pytest.raises(ApiError) as e:
        scenario("""[[rule]]
on = "rcpt"
reply = "999 bad"

[[rule]]
on = "nowhere"
reply = "250 ok"
""")
    assert e.value.status == 422
    assert [(d["line"], d["col"]) for d in e.value.body["diagnostics"]] == [(3, 9), (6, 6)]


def test_http_each_test_has_its_own_port_and_counters(mailfault_api):
    once = """
        [[rule]]
        on = "rcpt"
        reply = "451 4.3.0 Try again later"
        times = 1
    """
    a, b = mailfault_api.put("http-own-a", once), mailfault_api.put("http-own-b", once)
    try:
        assert a["port"] != b["port"]
        assert send_order_mail("127.0.0.1", a["port"], "c@example.test") == [451, 250]
        assert send_order_mail("127.0.0.1", b["port"], "c@example.test") == [451, 250]
    finally:
        mailfault_api.delete("http-own-a")
        mailfault_api.delete("http-own-b")
