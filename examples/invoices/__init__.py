"""invoices: a third resource service, the example in docs/adding-a-service.md."""
