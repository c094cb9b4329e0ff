"""What a benchmark ran on, recorded beside every figure it prints."""

from dreamer.provenance import machine_info

__all__ = ["machine_info"]
