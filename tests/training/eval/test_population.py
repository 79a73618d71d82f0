"""The population generator's recipe: one function for `evaluate --fewshot` and scripts/make_population.sh."""

from training.eval.population import population_commands, population_stage2_steps


def test_population_stage2_steps():
    # measured: 1000 steps left the population generator under-trained
    assert population_stage2_steps("demo") == 3000
    # 0 = the preset's registry
    assert population_stage2_steps("tiny") == 0 and population_stage2_steps("base") == 0
    assert population_stage2_steps("demo", 500) == 500 and population_stage2_steps("base", 7) == 7



def _flag(cmd, name):
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_population_commands_carry_the_measured_budget(tmp_path):
    sim, vae, unet = population_commands(tmp_path, preset="demo", size=64, carrier_ghz=24.0, seed=1)
    assert sim[0] == "simulate" and (
        (_flag(sim, "--users"), _flag(sim, "--per-user"), _flag(sim, "--seed")) == ("20", "100", "1"))
    assert vae[0] == "train-vae" and _flag(vae, "--max-steps") is None  # the preset's stage-1 budget
    assert unet[0] == "train-unet" and _flag(unet, "--max-steps") == "3000"
    assert _flag(unet, "--vae") == str(tmp_path / "vae_run" / "vae") and "--resume" not in unet
    vq = population_commands(tmp_path, preset="tiny", size=32, carrier_ghz=77.0, seed=2,
                             route="vq-diffusion", quick=True)
    assert _flag(vq[0], "--users") == "4" and _flag(vq[0], "--carrier-ghz") == "77"
    assert (_flag(vq[1], "--autoencoder") == "vq" and vq[2][0] == "train-transformer"
            and _flag(vq[2], "--max-steps") == "20")


def test_population_commands_resume_what_exists(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.csv").write_text("path,user,split\n")
    (tmp_path / "pipeline-run" / "checkpoints").mkdir(parents=True)
    cmds = population_commands(tmp_path, preset="demo", size=64, carrier_ghz=24.0, seed=1, resume=True)
    assert [c[0] for c in cmds] == ["train-vae", "train-unet"]  # the simulated population is there already
    assert "--resume" not in cmds[0] and _flag(cmds[1], "--resume") == "latest"


def test_population_simulates_like_the_evaluated_data():
    """A dataset made with `simulate --cover-conditions` (data/sim10c) gets a population simulated the same
    way."""
    from pathlib import Path

    from training.eval.population import covers_conditions

    assert covers_conditions({"simulate": {"variation": {"aspect_deg": 70.0, "speed_span": 0.3}}})
    assert (not covers_conditions({"simulate": {"variation": {"aspect_deg": 30.0}}})
            and not covers_conditions({}))
    sim = population_commands(Path("p"), preset="demo", size=64, carrier_ghz=24.0, seed=1,
                              cover_conditions=True)[0]
    assert sim[-1] == "--cover-conditions"
    assert "--cover-conditions" not in population_commands(Path("p"), preset="demo", size=64,
                                                           carrier_ghz=24.0, seed=1)[0]
