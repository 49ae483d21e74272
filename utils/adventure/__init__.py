"""Chapter 12's topic package: bring any agent into the toolkit (see `harness`)."""
