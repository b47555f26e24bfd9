from c2fnas.cli import main

main()
