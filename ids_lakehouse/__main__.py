from ids_lakehouse.cli import main

raise SystemExit(main())
