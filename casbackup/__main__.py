from casbackup.cli import main

main()
