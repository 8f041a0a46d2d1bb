"""The MQTT outbox, topics and the station file's `mqtt:` section, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellinspect.plant.mqtt_outbox import MqttOutbox
from cellinspect.plant.mqtt_topics import StationIdentity, Topics
from cellinspect.station.config import StationInvalidError, parse_station


def test_outbox_keeps_order_and_ids_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = MqttOutbox(path)
    assert [box.add("t/result", f'{{"n":{n}}}', f"id{n}") for n in range(5)] == [True] * 5
    assert box.add("t/result", "{}", "id2") is False  # the same result again: one row
    first = box.peek(2)
    assert [m.message_id for m in first] == ["id0", "id1"]
    box.done([m.seq for m in first])
    # Acknowledged: not sent again, and a journal recovery offering it again is refused.
    assert box.add("t/result", "{}", "id0") is False
    box.close()  # what a kill -9 leaves: the file

    again = MqttOutbox(path)
    left = again.peek(10)
    assert [m.message_id for m in left] == ["id2", "id3", "id4"]
    assert again.backlog == 3
    # Sequence numbers keep growing after a reopen: a consumer can order by them.
    again.add("t/result", "{}", "id5")
    seqs = [m.seq for m in again.peek(10)]
    assert seqs == sorted(seqs) and seqs[-1] == 6
    again.close()


def test_topics_use_the_station_ids_and_mask_reserved_characters() -> None:
    who = StationIdentity(station_id="cell-7", site="plant a", area=None, line="L+3/#")
    topics = Topics.of("cellinspect", who)
    assert topics.result == "cellinspect/plant_a/_/L_3__/cell-7/result"
    assert topics.state.endswith("/cell-7/state")


def _station(tmp_path: Path, **fields: object) -> dict[str, object]:
    recipe = tmp_path / "r.yaml"
    return {"station_id": "s1", "recipes": {1: str(recipe)}, **fields}


def test_mqtt_is_off_by_default_and_paths_resolve(tmp_path: Path) -> None:
    file = tmp_path / "station.yaml"
    assert parse_station(_station(tmp_path), file).mqtt.enabled is False
    station = parse_station(
        _station(
            tmp_path,
            area="assembly",
            mqtt={
                "enabled": True,
                "username": "cell",
                "password_file": "secrets/mqtt.pw",
                "tls": {"ca": "ca.pem"},
            },
        ),
        file,
    )
    assert station.area == "assembly"
    assert station.mqtt.password_file == tmp_path.resolve() / "secrets" / "mqtt.pw"
    assert station.mqtt.tls is not None and station.mqtt.tls.ca == tmp_path.resolve() / "ca.pem"


@pytest.mark.parametrize(
    ("mqtt", "fragment"),
    [
        ({"password_file": "pw"}, "password_file needs username"),
        ({"qos": 0}, "qos"),
        ({"tls": {"cert": "c.pem"}}, "cert and key go together"),
        ({"topic_prefix": "a/#"}, "topic_prefix"),
        ({"reconnect_min_s": 10, "reconnect_max_s": 2}, "reconnect_max_s"),
        ({"brokr": "x"}, "brokr"),
    ],
)
def test_bad_mqtt_sections_are_refused(
    tmp_path: Path, mqtt: dict[str, object], fragment: str
) -> None:
    with pytest.raises(StationInvalidError) as err:
        parse_station(_station(tmp_path, mqtt=mqtt), tmp_path / "station.yaml")
    assert fragment in str(err.value)
