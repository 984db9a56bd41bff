"""``pull --max-kld X``: the smallest quantization whose KL divergence is at most X (issue 24)."""

from __future__ import annotations

from support.hubfixtures import hub, online  # noqa: F401 - fixtures

MiB = 1 << 20


def test_pull_max_kld_picks_the_smallest_quant_that_keeps_the_quality(cli, hub, isolated_home, smollm2_path, tmp_path):
    files = {"Trio-Q4_K_M.gguf": smollm2_path}
    for quant, extra in (("Q6_K", 30), ("Q8_0", 60)):
        bigger = tmp_path / f"Trio-{quant}.gguf"
        bigger.write_bytes(smollm2_path.read_bytes() + bytes(extra * MiB))  # bigger, as far as sizes go
        files[bigger.name] = bigger
    hub.add_repo("someone/Trio-GGUF", files)

    loose = cli("pull", "someone/Trio-GGUF", "--dry-run", "--max-kld", "0.05")
    assert loose.returncode == 0, loose.stderr
    assert "chose Q4_K_M: the smallest quantization with KLD at most 0.05" in loose.stderr
    assert "KLD 0.0313, prior from llama.cpp's published Llama-3-8B table" in loose.stderr

    strict = cli("pull", "someone/Trio-GGUF", "--dry-run", "--max-kld", "0.006")
    assert strict.returncode == 0, strict.stderr
    assert "chose Q6_K: " in strict.stderr and "Trio-Q6_K.gguf" in strict.stdout

    impossible = cli("pull", "someone/Trio-GGUF", "--dry-run", "--max-kld", "0.0001")
    assert impossible.returncode != 0
    assert "no quantization offered has KLD at most 0.0001 (the lowest is 0.0014)" in impossible.stderr

    named = cli("pull", "someone/Trio-GGUF:Q8_0", "--dry-run", "--max-kld", "0.01")
    assert named.returncode != 0 and "--max-kld chooses the quantization" in named.stderr
