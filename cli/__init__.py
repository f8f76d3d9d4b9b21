"""ftctl command line (Typer). Parses, prints, calls service/; no business logic here."""
