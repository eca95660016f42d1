from service.auth.cli import main

raise SystemExit(main())
