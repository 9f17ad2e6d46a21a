"""Command line: `rolegate ...` (placeholder until the commands land)."""


def main() -> None:
    raise SystemExit("not yet")
