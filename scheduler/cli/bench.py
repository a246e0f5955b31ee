"""Placeholder for `fairgpu bench` (issue 4 fills it in)."""
import click


@click.command()
def bench() -> None:
    """Rerun the study's benchmark table (not yet built)."""
    raise click.ClickException("fairgpu bench is not built yet")
