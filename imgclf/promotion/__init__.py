"""Moving a registered version into `staging` or `production` by the rules: score it beside the current
holder on the same test images, decide, and move the stage compare-and-set."""
