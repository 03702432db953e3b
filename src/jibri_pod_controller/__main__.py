import sys

from jibri_pod_controller.app import main

sys.exit(main())
