"""Prints `git status --short` for the current repository."""

import subprocess


def main() -> None:
    result = subprocess.run(
        ["git", "status", "--short"], check=True, capture_output=True, text=True
    )
    print(result.stdout or "clean")


if __name__ == "__main__":
    main()
