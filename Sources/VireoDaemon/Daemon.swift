import VireoAPI
