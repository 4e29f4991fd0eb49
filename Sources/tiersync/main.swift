print("tiersync")
