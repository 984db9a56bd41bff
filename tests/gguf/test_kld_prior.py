"""The quality prior per quantization type: llama.cpp's published Llama-3-8B KLD table, and values
interpolated by bits per weight between its points, labelled as such (issue 24)."""

from __future__ import annotations

from localllm.gguf import quants


def test_published_points_are_the_table():
    assert {q: quants.kld_prior(q).kld for q in quants.PUBLISHED_KLD} == {
        "Q8_0": 0.0014, "Q6_K": 0.0055, "Q5_K_M": 0.0108, "Q4_K_M": 0.0313,
    }  # fmt: skip
    assert quants.kld_prior("q4_k_m").source == "published"
    assert "interpolated" not in quants.kld_prior("Q6_K").label


def test_others_are_interpolated_and_labelled():
    q5_k_s = quants.kld_prior("Q5_K_S")
    assert q5_k_s.source == "interpolated" and "interpolated by bits per weight" in q5_k_s.label
    assert 0.0108 < q5_k_s.kld < 0.0313  # between Q5_K_M and Q4_K_M, as its bits are
    # Fewer bits cost more, beyond the table's ends too.
    ordered = [quants.kld_prior(q).kld for q in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K")]
    assert ordered == sorted(ordered)
    assert quants.kld_prior("F16").kld == 0.0 and quants.kld_prior("BF16").source == "unquantized"
    assert quants.kld_prior("GUESSED") is None and quants.kld_prior("nonsense") is None
