"""Provider adapters: one module per protocol behind ``reelay.providers.base.Provider``."""
