from fsa.cli import main

main()
