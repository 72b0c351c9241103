from .cli import predict_main

raise SystemExit(predict_main())
