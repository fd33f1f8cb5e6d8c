"""Print the README's settings table from the Settings model (keeps the two in step)."""

from lookalike.settings import Settings


def main() -> None:
    print("| variable | default | meaning |")
    print("| --- | --- | --- |")
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = "`~/.local/share/lookalike`"
        elif field.default is None:
            default = "unset"
        else:
            value = field.default
            default = f"`{str(value).lower() if isinstance(value, bool) else value}`"
        print(f"| `LOOKALIKE_{name.upper()}` | {default} | {field.description} |")


if __name__ == "__main__":
    main()
