"""Shared test helper: how a user mistake must look on the command line."""

from rnnstudio.cli import main as cli_main


def one_line_error(capsys, argv, *must_contain) -> str:
    """What a user sees for their own mistake: exit 2 and one line on stderr, no traceback."""
    code = cli_main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("rnnstudio: error: ") and "\n" not in err and "Traceback" not in err, err
    for text in must_contain:
        assert text in err, err
    return err
