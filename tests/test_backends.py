"""The backend records: the format table comes from them, and every command checks a backend's extra
before it starts."""

import dataclasses

import pytest

from skipnet.common.contract import FORMATS, format_of_path
from skipnet.common.contract.backends import BACKEND_RECORDS, RECORDS


def test_the_format_table_is_the_records():
    exported = {name: f for name, f in FORMATS.items() if f.exported}
    for b in RECORDS:
        mine = {name for name, f in exported.items() if f.backend == b.name}
        expected = (
            {b.name}
            | {f"{b.name}-int8" for v in b.int8 if v != "qat"}
            | {f"{b.name}-int8-qat" for v in b.int8 if v == "qat"}
        )
        assert mine == expected
        assert all(exported[n].extension == b.extension and exported[n].record is b for n in mine)
        assert format_of_path(f"model{b.extension}").backend == b.name
        assert callable(b.exporter_class().write) and b.runtime_class() is not None
    assert set(exported) == {n for b in RECORDS for n in FORMATS if FORMATS[n].backend == b.name}


@pytest.fixture
def tflite_not_installed(monkeypatch):
    """The TFLite record as it reads where its extra is not installed: a module it needs is absent."""
    record = dataclasses.replace(BACKEND_RECORDS["tflite"], needs=("skipnet_test_no_such_module",))
    monkeypatch.setitem(BACKEND_RECORDS, "tflite", record)


def _one_line(capsys, rc, match):
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert match in err and "pip install 'skipnet-deploy[tflite]'" in err, err


def test_a_missing_extra_is_said_before_any_work(tflite_not_installed, capsys, tmp_path):
    from skipnet.bench.cli import main as bench_main
    from skipnet.export.cli import main as export_main
    from skipnet.pipeline.cli import main as pipeline_main

    # the run directory does not even exist: the extra is checked first, in a second
    _one_line(capsys, export_main([str(tmp_path / "run"), "--format", "tflite", "--int8"]), "--format tflite-int8")
    _one_line(capsys, bench_main(["--formats", "onnx,tflite", "--models", "skipnet_xs"]), "--formats tflite")
    (tmp_path / "p.yaml").write_text(f"out: {tmp_path / 'p'}\nexport: {{formats: [tflite-int8]}}\n")
    _one_line(capsys, pipeline_main(["--config", str(tmp_path / "p.yaml")]), "export format tflite-int8")
    assert not (tmp_path / "p").exists()
