"""Forward operators and noise models (measurement side); filled in by the operators issue."""

__all__: list[str] = []
