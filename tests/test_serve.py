"""``dass serve``: the HTTP API on a 2-minute recording with a loud event, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dass.checkpoints import save_pretrained
from dass.inference import file_features, forward_features, predict_timeline
from dass.models.dass import DASS, DASSConfig

torch.set_num_threads(1)
LABELS = ["Speech", "Music", "Siren", "Rain"]
EVENT = (50.0, 60.0)  # the loud event of the 2-minute test recording
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
RESULTS = Path(__file__).resolve().parents[1] / "results"


def recording(path: Path, seconds: float, events: list[tuple[float, float]], seed: int) -> None:
    """Quiet noise with loud two-tone bursts (a siren-like sound) at ``events``, 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.003 * rng.standard_normal(t.size)
    for a, b in events:
        inside = (t >= a) & (t < b)
        wave[inside] += 0.4 * np.sin(2 * np.pi * (900 + 300 * np.sin(2 * np.pi * 0.5 * t[inside])) * t[inside])
    sf.write(path, wave.astype(np.float32), 16000)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny DASS whose 'Siren' output is fitted (a linear probe on its 0.32 s step features) to find the
    loud bursts of a training recording; the other classes stay silent. Plus the 2-minute test file."""
    root = tmp_path_factory.mktemp("serve")
    recording(root / "train.wav", 100.0, [(10, 18), (40, 45), (70, 80)], seed=1)
    torch.manual_seed(0)
    model = DASS(DASSConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=4, labels=LABELS)).eval()
    steps = forward_features(model, file_features(root / "train.wav"))[0].mean(dim=1).T  # (W', C)
    centres = (torch.arange(steps.shape[0]) + 0.5) * 0.32
    target = torch.zeros(steps.shape[0])
    for a, b in [(10, 18), (40, 45), (70, 80)]:
        target[(centres >= a) & (centres < b)] = 1.0
    probe = torch.nn.Linear(steps.shape[1], 1)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(steps)[:, 0], target)
        loss = loss + 1e-3 * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        head = model.classifier.head
        head.weight.zero_()
        head.bias.fill_(-4.0)
        head.weight[2] = probe.weight[0]
        head.bias[2] = probe.bias[0]
    save_pretrained(model, root / "model")
    recording(root / "two_minutes.wav", 120.0, [EVENT], seed=2)
    times, scores = predict_timeline(model, file_features(root / "two_minutes.wav"), segment_s=0.32)
    loud = (times[:, 0] >= EVENT[0] + 1) & (times[:, 1] <= EVENT[1] - 1)
    quiet = (times[:, 1] < EVENT[0] - 3) | (times[:, 0] > EVENT[1] + 3)
    assert scores[loud, 2].min() > 0.8 and scores[quiet, 2].max() < 0.2, "the probe did not learn the bursts"
    return root, model


class Server:
    """``python -m dass serve`` on a free port of 127.0.0.1, stopped at the end."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "dass", "serve", "--model", str(root / "model"),
                                         "--port", "0", "--threads", "1", *extra], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("dass serve: http://127.0.0.1:"), line + self.process.stderr.read()
        self.url = line.split()[2]

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
        request = urllib.request.Request(self.url.rstrip("/") + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def post(self, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
        request = urllib.request.Request(self.url.rstrip("/") + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait(self, job: str, timeout: float = 300) -> list[dict]:
        """Poll a job to its end; returns every status seen."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = json.loads(self.get(f"/api/jobs/{job}")[1])
            seen.append(status)
            if status["state"] in ("done", "error"):
                return seen
            time.sleep(0.05)
        raise AssertionError(f"job {job} did not finish: {seen[-1]}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def test_api_upload_result_audio_ranges_and_paths(setup) -> None:
    root, _ = setup
    data = (root / "two_minutes.wav").read_bytes()
    server = Server(root, "--root", str(root))
    try:
        status, page, _ = server.get("/")
        assert status == 200 and b"<canvas id=\"timeline\"" in page and b"http" not in page.lower().replace(
            b'name="viewport"', b"")  # nothing from the network
        assert server.get("/static/app.js")[0] == 200 and server.get("/static/../__init__.py")[0] == 404
        code, answer = server.post("/api/upload", data, {"X-Filename": "two%20minutes.wav"})
        assert code == 200
        seen = server.wait(answer["job"])
        result = seen[-1]["result"]
        assert seen[-1]["state"] == "done" and result["file"] == "two minutes.wav"
        assert result["duration_s"] == 120.0 and result["top"][0]["label"] == "Siren"
        sirens = [e for e in result["events"] if e["label"] == "Siren"]
        assert len(sirens) == 1 and abs(sirens[0]["onset_s"] - EVENT[0]) < 1 and abs(sirens[0]["offset_s"] - EVENT[1]) < 1
        assert [e["label"] for e in result["events"]] == ["Siren"]
        assert result["heatmap"]["labels"][0] == "Siren" and len(result["times"]) == len(result["heatmap"]["scores"][0])
        progress = [s["progress"] for s in seen]
        assert progress == sorted(progress) and progress[-1] == 1.0
        # the audio, whole and by byte range (the player seeks with ranges)
        status, body, headers = server.get(f"/api/jobs/{answer['job']}/audio")
        assert status == 200 and body == data and headers["Accept-Ranges"] == "bytes"
        status, body, headers = server.get(f"/api/jobs/{answer['job']}/audio", {"Range": "bytes=1000-1999"})
        assert status == 206 and body == data[1000:2000] and headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
        # a server path: only under --root
        code, answer = server.post("/api/path", json.dumps({"path": "two_minutes.wav"}).encode(), {})
        assert code == 200 and server.wait(answer["job"])[-1]["result"]["events"] == result["events"]
        code, answer = server.post("/api/path", json.dumps({"path": "../../etc/passwd"}).encode(), {})
        assert code == 403 and "outside the server's folder" in answer["error"]
        code, answer = server.post("/api/upload", b"not audio", {"X-Filename": "bad.wav"})
        final = server.wait(answer["job"])[-1]
        assert final["state"] == "error" and "bad.wav" in final["error"] and str(root) not in final["error"]
    finally:
        server.close()


def test_progress_reaches_the_page_from_the_tiled_engine(setup, tmp_path) -> None:
    """A file longer than one tile: the job reports the feature blocks and the engine's tiles as they go."""
    from dass.serve import Analyzer

    _, model = setup
    recording(tmp_path / "long.wav", 200.0, [(150, 160)], seed=3)  # 20 000 frames > one tile of 16 384
    analyzer = Analyzer(model, LABELS)
    try:
        job = analyzer.submit("long.wav", tmp_path / "long.wav", owned=False)
        seen = []
        while job.state not in ("done", "error"):
            seen.append((job.phase, job.progress))
            time.sleep(0.005)
        assert job.state == "done", job.error
        phases = {phase for phase, _ in seen}
        assert {"decoding and features", "model"} <= phases
        model_steps = sorted({p for phase, p in seen if phase == "model"})
        assert len(model_steps) >= 3 and 0.3 < model_steps[0] < model_steps[-1] <= 0.98
        assert [e["label"] for e in job.result["events"]] == ["Siren"]
    finally:
        analyzer.close()


def _playwright():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium; scripts/install.sh --test does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; the test extra has it)")
    return sync_playwright


def test_browser_finds_the_event_in_the_list_and_the_timeline(setup, tmp_path) -> None:
    sync_playwright = _playwright()
    root, _ = setup
    server = Server(root)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url)
            page.wait_for_function("() => document.getElementById('model-name').textContent.includes('4 classes')")
            page.set_input_files("#file", str(root / "two_minutes.wav"))
            page.wait_for_selector("#events tbody tr", timeout=240_000)
            rows = page.eval_on_selector_all("#events tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
            assert [r[3] for r in rows] == ["Siren"]
            onset, offset = float(rows[0][0]), float(rows[0][1])
            assert abs(onset - EVENT[0]) < 1 and abs(offset - EVENT[1]) < 1
            assert page.inner_text("#tags li:first-child").endswith("Siren")
            # the heat map: the Siren row is bright inside the event and dark outside
            x_in, y, x_out = page.evaluate("() => [dassView.xOf(55), dassView.rowY('Siren'), dassView.xOf(20)]")
            inside, outside = page.evaluate(
                "([a, y, b]) => { const c = document.getElementById('timeline').getContext('2d');"
                " return [Array.from(c.getImageData(a, y, 1, 1).data), Array.from(c.getImageData(b, y, 1, 1).data)]; }",
                [x_in, y, x_out])
            assert inside[0] > 180 and inside[1] > 180  # yellow end of viridis
            assert outside[0] < 100 and outside[1] < 60  # purple end
            # click a heat-map cell: the player seeks to its start
            box = page.locator("#timeline").bounding_box()
            page.mouse.click(box["x"] + x_in, box["y"] + y)
            page.wait_for_function("() => Math.abs(document.getElementById('player').currentTime - 54.72) < 0.05")
            # click the event in the list: the player seeks to its onset, the cursor follows
            page.click("#events tbody tr")
            page.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {onset}) < 0.05")
            page.click("#zoom-in")
            page.click("#zoom-in")
            span = page.evaluate("() => dassView.span")
            assert abs(span - 30.0) < 0.01  # 120 s / 4, scrolled so that the cursor is in view
            assert page.evaluate("() => dassView.t0 <= document.getElementById('player').currentTime")
            page.click("#zoom-fit")
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert shot.stat().st_size > 10_000
        if os.environ.get("DASS_WRITE_RESULTS"):
            shutil.copyfile(shot, RESULTS / "serve.png")
    finally:
        server.close()


def test_serve_refuses_bad_options(setup, capsys) -> None:
    from dass.cli import main

    root, _ = setup
    assert main(["serve", "--model", str(root / "model"), "--root", str(root / "missing")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(["serve", "--model", str(root / "model"), "--port", "70000"]) == 1
    assert "--port must be" in capsys.readouterr().err
