from embedstore.cli import main

main()
