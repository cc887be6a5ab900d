"""The workshop's tooling, on top of everything: installing (``install``), checking a machine
(``environment``), the command line (``cli``), running notebooks headless (``notebooks``), offline
HTML (``handout``), the room kit (``kit``), Colab (``colab``) and the quoted-number checker
(``quotes``)."""
