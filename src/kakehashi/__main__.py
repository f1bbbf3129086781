from kakehashi.cli import main

main()
