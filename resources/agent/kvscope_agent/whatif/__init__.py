"""What-if: a recorded run replayed on another card (docs/whatif.md).

The built-in engine's own scheduler (engine/scheduler.py) runs on a simulated machine (sim.py)
whose step, copy and admission costs are calibrated on the recorded run (calibrate.py, costs.py)
and scaled to a card's profile (profiles.py, profiles/*.json); the result is a protocol log marked
`simulated` in run.start. Standard library only: it runs where the app runs, without torch.
"""
