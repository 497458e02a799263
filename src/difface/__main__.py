from difface.cli import main

raise SystemExit(main())
