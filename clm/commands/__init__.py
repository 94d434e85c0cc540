"""CLI commands, one module each; registered in clm.cli."""
