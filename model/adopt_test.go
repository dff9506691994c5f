package model

import "testing"

// An operator's writes can run the kernel's generation ahead of the
// model's; once adopted, the model's next change continues after it.
func TestAdoptGeneration(t *testing.T) {
	store := &MemoryControlStore{}
	m, err := Create("sub", "mod", &GenericModelOps{}, store)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Init(Options{}); err != nil {
		t.Fatal(err)
	}
	own := m.Control().Generation
	operator := m.Control()
	operator.Mode, operator.Generation = ModeEmergency, own+5 // five operator writes
	store.Set(operator)

	m.AdoptGeneration(own + 5)
	m.AdoptGeneration(own + 1) // behind: ignored
	if err := m.SetMode(ModeEmergency, "operator"); err != nil {
		t.Fatal(err)
	}
	if got := store.Current().Generation; got != own+6 {
		t.Fatalf("generation %d after adopting %d, want %d", got, own+5, own+6)
	}
	if got := m.Control().Generation; got != own+6 {
		t.Fatalf("model generation %d, want %d", got, own+6)
	}
	for i, c := range store.History() {
		if i > 0 && int32(c.Generation-store.History()[i-1].Generation) < 0 {
			t.Fatalf("stored generations went back: %v", store.History())
		}
	}
}
