from costwarden.cli.main import main

main()
